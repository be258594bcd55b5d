"""The train group of deeplens-ctl through click's runner: real commands at tiny sizes."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from control.cli import main

from test_train import CLASSES, write_synthetic_set


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_train_then_evaluate_then_predict(tmp_path):
    manifest = write_synthetic_set(tmp_path / "data", count=4)
    result = run("train", manifest, "--val", manifest, "--arch", "tiny", "--size", 96, "--epochs", 1,
                 "--batch-size", 4, "--runs-dir", tmp_path / "runs", "--name", "cli", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["package"].endswith("runs/cli/model")
    model = summary["package"]

    result = run("evaluate", model, manifest, "--json", "--plot", tmp_path / "plots")
    figures = json.loads(result.stdout)
    assert {"map50", "map50_voc07", "map_coco", "best_threshold", "confusion"} <= set(figures)
    assert (tmp_path / "plots/pr_curves.png").is_file() and (tmp_path / "plots/pr_1.png").is_file()
    assert "confusion" in run("evaluate", model, manifest).stdout

    result = run("predict", model, tmp_path / "data/img0.png", tmp_path / "data/img1.png", "--threshold", 0,
                 "-o", tmp_path / "shown")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"].endswith(f"img{i}.png") for i, line in enumerate(lines)] == [True, True]
    first = lines[0]["detections"][0]
    assert first["label"] in CLASSES and len(first["box"]) == 4 and (tmp_path / "shown/img0.png").is_file()


def test_model_folders_with_missing_or_mismatched_files_are_refused(trained, tmp_path):
    _, package, manifest = trained
    image = manifest.parent / "img0.png"
    missing = shutil.copytree(package.folder, tmp_path / "missing")
    (missing / f"{package.name}-0000.params").unlink()
    mismatched = shutil.copytree(package.folder, tmp_path / "mismatched")
    meta = json.loads((mismatched / "model.json").read_text())
    meta["classes"] = ["a", "b", "c"]
    (mismatched / "model.json").write_text(json.dumps(meta))
    for verb in (["evaluate", missing, manifest], ["predict", missing, image]):
        result = run(*verb)
        assert result.exit_code == 1 and "tiny-0000.params: listed in model.json 'files' but missing" in result.output
    for verb in (["evaluate", mismatched, manifest], ["predict", mismatched, image]):
        result = run(*verb)
        assert result.exit_code == 1 and "graph predicts 2 classes but model.json 'classes' lists 3" in result.output
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    result = run("import-sagemaker", bad, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "bad.tar.gz: cannot read the artifact" in result.output


def test_import_sagemaker_and_model_dummy(trained, tmp_path):
    run_dir = trained[0].run_dir
    result = run("import-sagemaker", run_dir / "model.tar.gz", "-o", tmp_path / "imported", "--name", "back",
                 "--class-names", ",".join(CLASSES))
    assert result.exit_code == 0 and (tmp_path / "imported/back-symbol.json").is_file()
    result = run("model", "dummy", "--name", "d", "--classes", 3, "--size", 128, "-o", tmp_path / "dummy")
    meta = json.loads((tmp_path / "dummy/model.json").read_text())
    assert result.exit_code == 0 and meta["classes"] == ["class0", "class1", "class2"] and meta["input"]["width"] == 128


def test_invalid_manifest_is_refused_with_the_validators_message(tmp_path):
    manifest = write_synthetic_set(tmp_path / "data", count=2)
    (tmp_path / "data/img0.png").write_bytes(b"")
    result = run("train", manifest, "--arch", "tiny", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "data.manifest:1: error" in result.output
    assert not (tmp_path / "runs").exists()


def start_training(tmp_path, name):
    """`deeplens-ctl train` in a process of its own; returns it once its first epoch is saved."""
    manifest = write_synthetic_set(tmp_path / "data", count=4)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from control.cli import main; main()", "train", str(manifest), "--arch", "tiny",
         "--size", "96", "--epochs", "500", "--batch-size", "4", "--runs-dir", str(tmp_path / "runs"),
         "--name", name, "--json"],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state, deadline = tmp_path / "runs" / name / "state.json", time.monotonic() + 60
    while not state.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    return proc


def test_sigterm_stops_training_after_the_epoch_and_exports_the_best_weights(tmp_path):
    proc = start_training(tmp_path, "sig")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert 1 <= summary["epochs"] < 10 and Path(summary["package"], "model.json").is_file()
    assert "SIGTERM: stopping after this epoch" in err and "stop requested (SIGTERM)" in err


def test_a_second_signal_aborts(tmp_path):
    proc = start_training(tmp_path, "abort")
    proc.send_signal(signal.SIGTERM)     # two signals (distinct, so that neither is merged into the other)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Aborted" in err
    assert not (tmp_path / "runs/abort/model").exists()


def test_train_init_from_an_earlier_run(trained, tmp_path):
    trainer, _, manifest = trained
    result = run("train", manifest, "--arch", "tiny", "--size", 96, "--epochs", 1, "--batch-size", 4,
                 "--runs-dir", tmp_path, "--name", "again", "--init", trainer.run_dir, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["init"].startswith(f"init: 2 of 2 classes from {trainer.run_dir} (epoch ")
    result = run("train", manifest, "--size", 96, "--runs-dir", tmp_path, "--name", "arch", "--init", trainer.run_dir)
    assert result.exit_code == 1 and "is a 'tiny' model; this run is --arch mobilenet" in result.output
    result = run("train", manifest, "--backend", "sagemaker", "--role", "r", "--bucket", "b", "--init", trainer.run_dir)
    assert result.exit_code == 2 and "--init works with --backend local only" in result.output
