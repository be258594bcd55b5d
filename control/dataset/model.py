"""The dataset model every reader produces and every writer consumes.

An image is a local file (or a remote reference) with its pixel size and boxes in pixels,
top-left origin, as corners. Boxes carry class *names*; one global ClassMap gives the ids,
so that exports from several labelling projects agree on what id 0 means.
"""
import dataclasses
import os
import re
from typing import List, Optional

from core.errors import InvalidInput


class DatasetError(InvalidInput):
    """A dataset cannot be read or written; `problems` lists what was found, if anything."""
    code = "invalid_dataset"

    def __init__(self, message, problems=()):
        self.problems = list(problems)
        if self.problems:
            message = message + "\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One finding, located by file, line (or row) and field so a person can go and fix it."""
    severity: str           # "error" or "warning"
    file: str
    line: Optional[int]
    field: Optional[str]
    message: str

    def __str__(self):
        where = self.file + (f":{self.line}" if self.line is not None else "")
        field = f" {self.field}:" if self.field else ""
        return f"{where}: {self.severity}:{field} {self.message}"

    def to_json(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Box:
    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self):
        return self.xmax - self.xmin

    @property
    def height(self):
        return self.ymax - self.ymin


@dataclasses.dataclass
class Image:
    """`path` is the local file (absolute); `ref` the original reference when it is remote."""
    path: Optional[str]
    width: int
    height: int
    boxes: List[Box] = dataclasses.field(default_factory=list)
    ref: Optional[str] = None
    depth: int = 3

    @property
    def location(self):
        return self.path or self.ref


class ClassMap:
    """Class names in id order, matched by normalised name ("2000_RUB" is "2000 rub").

    A fixed map (given by the user) refuses new names; an open one grows as names appear.
    """

    def __init__(self, names=(), fixed=False):
        self.names, self._ids, self.fixed = [], {}, False
        for name in names:
            self.id(name)
        self.fixed = fixed

    @staticmethod
    def key(name):
        return re.sub(r"[\s_-]+", " ", str(name).strip().casefold())

    def id(self, name):
        """The id of `name`, added if the map is open; None if it is fixed and lacks it."""
        key = self.key(name)
        if key not in self._ids:
            if self.fixed:
                return None
            self._ids[key] = len(self.names)
            self.names.append(str(name).strip())
        return self._ids[key]

    def canonical(self, name):
        """The spelling the map keeps for `name` (the first one seen)."""
        index = self.id(name)
        return None if index is None else self.names[index]

    def __len__(self):
        return len(self.names)


@dataclasses.dataclass
class Dataset:
    images: List[Image]
    classes: List[str]

    def __post_init__(self):
        self._map = ClassMap(self.classes, fixed=True)

    def class_id(self, name):
        return self._map.id(name)

    @property
    def box_count(self):
        return sum(len(image.boxes) for image in self.images)


def parse_class_map(text):
    """Names in id order from `--class-map`: a file (.json, .yaml, one name per line) or inline.

    Inline forms: "cat,dog" (ids by position) or "0=cat,1=dog". Ids must be 0..K-1.
    """
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            content = f.read()
        if text.endswith((".json", ".yaml", ".yml")):
            import yaml  # JSON is YAML
            data = yaml.safe_load(content)
            data = data.get("names", data.get("class-map", data)) if isinstance(data, dict) and \
                ("names" in data or "class-map" in data) else data
            items = list(enumerate(data)) if isinstance(data, list) else list(data.items())
        else:
            items = list(enumerate(line.strip() for line in content.splitlines() if line.strip()))
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        items = [tuple(p.split("=", 1)) if "=" in p else (i, p) for i, p in enumerate(parts)]
    try:
        by_id = {int(k): str(v).strip() for k, v in items}
    except ValueError:
        raise DatasetError(f"class map {text!r}: ids must be integers") from None
    if sorted(by_id) != list(range(len(by_id))) or not by_id:
        raise DatasetError(f"class map {text!r}: ids must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]


def pixels(value):
    """A coordinate as written to files: an integer when whole, else to 1/1000 px."""
    value = round(float(value), 3)
    return int(value) if value.is_integer() else value
