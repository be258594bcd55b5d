"""Training samples from a SageMaker augmented manifest, and batches of them for the network."""
import collections
import ctypes
import dataclasses
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from pathlib import Path

import click
import cv2
import numpy as np

from control.dataset import Collector, DatasetError, read
from control.dataset.sagemaker import validate

from . import TrainError

PR_SET_PDEATHSIG = 1     # prctl(2): the signal a process gets when its parent dies


@dataclasses.dataclass
class Sample:
    """One image: its file and boxes as rows [class_id, xmin, ymin, xmax, ymax] in pixels."""
    path: Path
    boxes: np.ndarray


def read_manifest(path):
    """(samples, class names) of an augmented manifest, read by control.dataset after its
    validator found no error: a manifest it refuses is refused here, with its messages."""
    path = str(path)
    try:
        errors = [p for p in validate(Collector(), path) if p.severity == "error"]
        if errors:
            raise DatasetError(f"{path}: not valid for training (fix or drop these lines)", errors)
        dataset, _ = read("sagemaker", path, strict=True)
    except DatasetError as exc:
        raise TrainError(str(exc)) from None
    if not dataset.images:
        raise TrainError(f"{path}: no labelled images")
    samples = [Sample(Path(image.path), np.array([[dataset.class_id(b.label), b.xmin, b.ymin, b.xmax, b.ymax]
                                                  for b in image.boxes], np.float32).reshape(-1, 5))
               for image in dataset.images]
    return samples, list(dataset.classes)


def load_image(path):
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise TrainError(f"{path}: not a readable image")
    return pixels


class DetectionData:
    """Decoded images kept in memory (camera frames are small) and, for training, a transform per draw."""

    def __init__(self, samples, transform=None):
        self.samples, self.transform = samples, transform
        self.images = [load_image(s.path) for s in samples]

    def __len__(self):
        return len(self.samples)

    def batch(self, indices, seed):
        """(images (B,3,H,W) uint8, labels (B,M,5) normalised, -1 padded) of the samples at
        `indices`, drawn with a generator of their own seed: where it is made does not matter."""
        rng = np.random.default_rng(seed)
        pairs = [self.transform(self.images[i], self.samples[i].boxes, rng) for i in indices]
        return np.stack([p[0] for p in pairs]), pad_labels([p[1] for p in pairs])

    def plan(self, batch_size, seed, epoch):
        """(indices, seed) of each full batch of an epoch: shuffled by (seed, epoch), each batch's
        augmentation seeded by (seed, epoch, batch index). A last partial batch is left out."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        return [(order[start:start + batch_size], [seed, epoch, n])
                for n, start in enumerate(range(0, len(order) - batch_size + 1, batch_size))]


class BatchMaker:
    """Makes the training batches of `data`: inline (`workers` 0) or in that many forked
    processes, each working a batch ahead, so that augmentation runs while the network trains.
    Either way the batches are the same (DetectionData.batch). A context manager: leaving it
    ends the workers, whatever ended the loop."""

    def __init__(self, data, workers=0):
        self.data, self.workers, self.pool = data, workers, None
        if workers:
            # fork (at the first batch): the workers share the decoded images and the transform as they are then
            self.pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), _start_worker,
                                            (data, os.getpid()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Drop the batches not started, let the workers finish theirs and exit."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def batches(self, plan):
        """The batches of `plan` (DetectionData.plan), in order. Should the workers die (a
        signal to the whole process group, the OOM killer), the rest are made here."""
        submitted = collections.deque()     # futures of plan[n:n + len(submitted)]
        for n, task in enumerate(plan):
            try:
                if self.pool is not None:
                    submitted.extend(self.pool.submit(_make_batch, *ahead)
                                     for ahead in plan[n + len(submitted):n + self.workers + 1])
                batch = submitted.popleft().result() if submitted else self.data.batch(*task)
            except BrokenProcessPool:
                click.echo("batch workers died: making the batches in this process", err=True)
                self.close()
                submitted.clear()
                batch = self.data.batch(*task)
            yield batch


_worker_data = None     # a worker's DetectionData, inherited through fork


def _start_worker(data, parent):
    """The handlers of stop_on_signals came along with the fork: a worker ignores SIGINT instead
    (a terminal sends Ctrl-C to the whole process group, and the run, stopping after its epoch,
    still needs the batches until then) and dies of SIGTERM. It dies with its parent too."""
    global _worker_data
    _worker_data = data
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:      # the parent died before prctl
        os._exit(1)


def _make_batch(indices, seed):
    return _worker_data.batch(indices, seed)


def pad_labels(labels):
    """Stack (M_i, 5) label arrays into (B, max M, 5), padding with -1 rows as MultiBoxTarget expects."""
    out = np.full((len(labels), max(1, max(len(l) for l in labels)), 5), -1, np.float32)
    for i, l in enumerate(labels):
        out[i, :len(l)] = l
    return out
