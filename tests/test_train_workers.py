"""Training batches made in worker processes (issue 14): the same batches as in the training
process, and no worker outliving the run however it ends."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from control.train.callbacks import Callback, StopRequest
from control.train.data import BatchMaker, DetectionData, read_manifest
from control.train.trainer import train_local
from control.train.transforms import TrainTransform

from test_cli_train import run
from test_train import tiny_config, write_synthetic_set

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_synthetic_set(tmp_path_factory.mktemp("workers") / "data", count=8)


def epoch_batches(data, workers, seed, epoch, batch_size=3):
    with BatchMaker(data, workers) as maker:
        return list(maker.batches(data.plan(batch_size, seed, epoch)))


def test_workers_make_the_same_batches_as_the_training_process(manifest):
    data = DetectionData(read_manifest(manifest)[0], TrainTransform(96, flip="rot90"))
    inline = epoch_batches(data, 0, seed=3, epoch=1)
    assert len(inline) == 2         # 8 images in batches of 3: the partial batch is left out
    for workers in (1, 2):
        made = epoch_batches(data, workers, seed=3, epoch=1)
        assert len(made) == len(inline)
        for (images, labels), (images_there, labels_there) in zip(inline, made):
            np.testing.assert_array_equal(images, images_there)
            np.testing.assert_array_equal(labels, labels_there)
    assert not np.array_equal(inline[0][0], epoch_batches(data, 0, seed=3, epoch=2)[0][0])
    assert not multiprocessing.active_children()


class Watch(Callback):
    """Records the worker processes seen during training; raises on a chosen epoch's first batch."""

    def __init__(self, raise_in_epoch=None):
        self.pids, self.raise_in_epoch = set(), raise_in_epoch

    def on_batch_end(self, trainer, logs):
        self.pids.update(p.pid for p in multiprocessing.active_children())
        if trainer.epoch + 1 == self.raise_in_epoch:
            raise RuntimeError("boom")


def gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_same_run_with_and_without_workers_and_the_workers_end_with_it(manifest, tmp_path):
    watch = Watch()
    runs = [train_local(tiny_config(name=f"w{workers}", epochs=2, workers=workers), manifest,
                        runs_dir=tmp_path, callbacks=[watch])[0] for workers in (0, 2)]
    assert [row["loss"] for row in runs[0].history] == pytest.approx([row["loss"] for row in runs[1].history],
                                                                      rel=1e-4)
    assert len(watch.pids) == 2 and gone(watch.pids)


def test_workers_end_when_the_run_raises_or_is_asked_to_stop(manifest, tmp_path):
    watch = Watch(raise_in_epoch=2)
    with pytest.raises(RuntimeError, match="boom"):
        train_local(tiny_config(name="raises", workers=2), manifest, runs_dir=tmp_path, callbacks=[watch])
    assert len(watch.pids) == 2 and gone(watch.pids)

    class StopInEpoch2(Watch):
        def on_batch_end(self, trainer, logs):
            super().on_batch_end(trainer, logs)
            if trainer.epoch == 1:
                (trainer.run_dir / StopRequest.FILE).touch()

    watch = StopInEpoch2()
    trainer, _ = train_local(tiny_config(name="stops", epochs=20, workers=2), manifest, runs_dir=tmp_path,
                             callbacks=[watch, StopRequest()])
    assert trainer.epoch == 2 and len(watch.pids) == 2 and gone(watch.pids)


def test_a_killed_worker_leaves_the_rest_of_the_batches_to_the_training_process(manifest, tmp_path, capsys):
    class KillWorkers(Watch):
        def on_batch_end(self, trainer, logs):
            if not self.pids:
                super().on_batch_end(trainer, logs)
                os.kill(next(iter(self.pids)), signal.SIGKILL)

    reference = train_local(tiny_config(name="inline", epochs=2, workers=0), manifest, runs_dir=tmp_path,
                            callbacks=[])[0]
    trainer = train_local(tiny_config(name="killed", epochs=2, workers=1), manifest, runs_dir=tmp_path,
                          callbacks=[KillWorkers()])[0]
    assert "batch workers died: making the batches in this process" in capsys.readouterr().err
    assert [row["loss"] for row in trainer.history] == pytest.approx([row["loss"] for row in reference.history],
                                                                     rel=1e-4)


def start_training(tmp_path, name):
    """`deeplens-ctl train --workers 2` in a session of its own (as a terminal's job); returns it
    and its workers' pids once its first epoch is saved."""
    manifest = write_synthetic_set(tmp_path / "data", count=16)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from control.cli import main; main()", "train", str(manifest), "--arch", "tiny",
         "--size", "96", "--epochs", "500", "--batch-size", "2", "--workers", "2",
         "--runs-dir", str(tmp_path / "runs"), "--name", name, "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    state, deadline = tmp_path / "runs" / name / "state.json", time.monotonic() + 60
    while not state.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2
    return proc, [int(pid) for pid in children]


def test_ctrl_c_to_the_whole_job_stops_after_the_epoch_and_the_workers_end(tmp_path):
    proc, workers = start_training(tmp_path, "ctrl-c")
    os.killpg(proc.pid, signal.SIGINT)     # what a terminal does: the workers get it too
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stop requested (SIGINT)" in err and Path(json.loads(out.strip().splitlines()[-1])["package"]).is_dir()
    assert err.count("SIGINT: stopping after this epoch") == 1 and "batch workers died" not in err
    assert gone(workers)


def test_workers_die_with_a_killed_training_process(tmp_path):
    proc, workers = start_training(tmp_path, "killed")
    proc.kill()
    proc.wait(timeout=30)
    assert gone(workers)


def test_workers_on_the_command_line(manifest, tmp_path):
    result = run("train", manifest, "--arch", "tiny", "--size", 96, "--epochs", 1, "--batch-size", 4,
                 "--workers", 2, "--runs-dir", tmp_path, "--name", "cli", "--json")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "cli/args.yaml").read_text())["workers"] == 2
    result = run("train", manifest, "--workers", -1, "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "--workers" in result.output
