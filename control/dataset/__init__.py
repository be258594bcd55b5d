"""Datasets for deeplens-kit: one model, readers and writers by format key, manifest tools.

The SageMaker augmented manifest is the interchange format on disk (design §4); other
formats are import/export only. Everything the `deeplens-ctl labels/manifest` verbs do is
a call into this package.
"""
from .collect import Collector
from .formats import READERS, WRITERS, read, write
from .model import Box, ClassMap, Dataset, DatasetError, Image, Problem, parse_class_map

__all__ = ["Box", "ClassMap", "Collector", "Dataset", "DatasetError", "Image", "Problem", "READERS", "WRITERS",
           "parse_class_map", "read", "write"]
