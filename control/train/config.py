"""What defines a training run, kept free of MXNet so that the CLI can show its defaults
without loading it; saved as args.yaml so that `--resume` rebuilds the run."""
import dataclasses
import math
from pathlib import Path

import yaml

from core.crop import DEFAULT_CROP

ARGS = "args.yaml"
FLIPS = {
    "mirror": "left-right mirror, for classes that look alike mirrored (people, cars, animals)",
    "rot180": "upside-down turn, which keeps handedness (text, signs): scenes seen from above",
    "rot90": "quarter turns, keeping handedness: objects lying in any orientation under a camera looking down",
    "none": "no flip",
}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as args.yaml so that `--resume` rebuilds it."""
    name: str = "exp"
    arch: str = "mobilenet"
    size: int = 300
    epochs: int = 200
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 0.002
    weight_decay: float = 5e-5
    warmup_epochs: float = 3.0
    time_budget: float = 0.0        # minutes of training (validation included); 0: no limit
    patience: int = 40              # epochs without a better validation mAP before stopping; 0: never
    seed: int = 0
    workers: int = 2                # processes making the augmented batches; 0: the training process itself
    flip: str = "mirror"
    threshold: float = 0.5          # the deployed score threshold that evaluation reports P/R at
    crop: str = DEFAULT_CROP        # how validation frames meet the input: as the device's crop setting
    classes: list = None
    init: str = None                # --init: a run folder or model package whose weights the run starts from

    @classmethod
    def load(cls, path):
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def lr_at(config, progress):
    """Linear warm-up then cosine decay to 1% of `lr`; `progress` runs 0..1 over the run."""
    warmup = config.warmup_epochs / max(config.epochs, 1)
    if progress < warmup:
        return config.lr * (0.05 + 0.95 * progress / warmup)
    cosine = (progress - warmup) / max(1 - warmup, 1e-9)
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(cosine, 1.0))))


