"""Named events around the training loop, and what listens to them: progress on stderr,
metrics.csv, plots, stopping rules."""
import contextlib
import csv
import io
import os
import signal
import sys

import click
import cv2

from core.fileio import atomic_write_text

from . import plots


class Callback:
    """Named events of the loop; override the ones you need."""

    def on_train_start(self, trainer): pass
    def on_epoch_start(self, trainer, batches): pass
    def on_batch_end(self, trainer, logs): pass
    def on_epoch_end(self, trainer, logs): pass
    def on_train_end(self, trainer): pass


class ProgressBar(Callback):
    """Per epoch a bar with the running loss and images/s, then the validation figures."""

    def __init__(self, file=None):
        self.file, self.bar, self.logs = file or sys.stderr, None, {}

    def on_epoch_start(self, trainer, batches):
        show = lambda _: (f"loss {self.logs['loss']:.3f}  {self.logs['images_per_s']:.1f} img/s"  # noqa: E731
                          if self.logs else "")
        self.bar = click.progressbar(length=batches, label=f"epoch {trainer.epoch + 1}/{trainer.config.epochs}",
                                     file=self.file, item_show_func=show, show_eta=True)
        self.bar.__enter__()

    def on_batch_end(self, trainer, logs):
        self.logs = logs
        self.bar.update(1)

    def on_epoch_end(self, trainer, logs):
        self.bar.__exit__(None, None, None)
        self.logs = {}
        click.echo(f"  val mAP@0.5 {logs['map50']:.3f}  mAP@[.5:.95] {logs['map_coco']:.3f}  "
                   f"best {trainer.best['map50']:.3f}  {logs['time']:.0f}s", file=self.file)


class CSVLogger(Callback):
    """metrics.csv, rewritten from the run's history each epoch (so a resumed run stays whole)."""

    def on_epoch_end(self, trainer, logs):
        out = io.StringIO()
        fields = list(dict.fromkeys(k for row in trainer.history for k in row))
        writer = csv.DictWriter(out, fields)
        writer.writeheader()
        writer.writerows(trainer.history)
        atomic_write_text(trainer.run_dir / "metrics.csv", out.getvalue())


class EarlyStopping(Callback):
    """Stop after `patience` epochs without a better epoch (see trainer.fitness)."""

    def __init__(self, patience):
        self.patience = patience

    def on_epoch_end(self, trainer, logs):
        since_best = trainer.epoch - trainer.best["epoch"]
        if self.patience and since_best >= self.patience:
            click.echo(f"early stop: no better epoch for {self.patience} epochs", err=True)
            trainer.stop = True


class TimeBudget(Callback):
    """Stop when the next epoch would not end within the budget (minutes)."""

    def __init__(self, minutes):
        self.seconds = minutes * 60

    def on_epoch_end(self, trainer, logs):
        per_epoch = trainer.elapsed / max(len(trainer.history), 1)
        if self.seconds and trainer.elapsed + per_epoch > self.seconds:
            click.echo(f"time budget: stopping after {trainer.elapsed:.0f}s", err=True)
            trainer.stop = True


class StopRequest(Callback):
    """Stop after the current epoch when <run_dir>/STOP exists (the file is then removed) or
    stop_on_signals caught a signal: another process (the studio) ends a run gracefully and
    still gets its checkpoint and the exported best weights."""
    FILE = "STOP"
    signalled = None    # the signal stop_on_signals caught: process-wide, as signals are

    def on_epoch_end(self, trainer, logs):
        why = StopRequest.signalled
        with contextlib.suppress(FileNotFoundError):
            (trainer.run_dir / self.FILE).unlink()
            why = why or f"{self.FILE} file"
        if why:
            click.echo(f"stop requested ({why}): stopping after epoch {trainer.epoch}", err=True)
            trainer.stop = True

    def on_train_end(self, trainer):
        # a request that came after the last epoch must not stop the next run in this folder
        with contextlib.suppress(FileNotFoundError):
            (trainer.run_dir / self.FILE).unlink()


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Inside, a first SIGTERM/SIGINT asks StopRequest to stop after the epoch in progress;
    a second one aborts at once (KeyboardInterrupt)."""
    def handle(signum, frame):
        if StopRequest.signalled:
            raise KeyboardInterrupt
        StopRequest.signalled = signal.Signals(signum).name
        # os.write: the progress bar may be inside a buffered write to stderr right now
        os.write(2, f"\n{StopRequest.signalled}: stopping after this epoch (send it again to abort)\n".encode())

    previous = {signum: signal.signal(signum, handle) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        StopRequest.signalled = None


class Plots(Callback):
    """loss.png and map.png each epoch; at the end pr_curves.png and val_predictions.jpg of the best weights."""

    def on_epoch_end(self, trainer, logs):
        epochs = [row["epoch"] for row in trainer.history]
        series = lambda *keys: {k: (epochs, [row[k] for row in trainer.history]) for k in keys}  # noqa: E731
        cv2.imwrite(str(trainer.run_dir / "loss.png"),
                    plots.line_chart(series("loss", "class_loss", "box_loss"), "training loss", "epoch", "loss"))
        cv2.imwrite(str(trainer.run_dir / "map.png"),
                    plots.line_chart(series("map50", "map_coco"), "validation mAP", "epoch", "mAP", ylim=(0, 1)))

    def on_train_end(self, trainer):
        trainer.validate()
        predictions = trainer.predict_val()
        cv2.imwrite(str(trainer.run_dir / "pr_curves.png"), plots.pr_chart(trainer.last_result.pr_curves))
        shown = [(rows[rows[:, 1] >= trainer.config.threshold], s.boxes, img)
                 for rows, s, img in zip(predictions, trainer.val_data.samples, trainer.val_data.images)][:16]
        grid = plots.prediction_grid([s[2] for s in shown], [s[0] for s in shown], [s[1] for s in shown], trainer.classes)
        cv2.imwrite(str(trainer.run_dir / "val_predictions.jpg"), grid)

