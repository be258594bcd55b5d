"""Deterministic train/validation(/test) split: group-aware, then stratified by class.

Consecutive captures of one scene are near-duplicates; if one lands in train and its twin
in validation, validation measures memory, not detection. So images whose perceptual
hashes are within `threshold` bits are grouped (transitively), and whole groups are dealt
to the splits, rarest classes first, each to the split that most lacks its classes.
"""
import random

import numpy as np

from core.dhash import HASH_BITS, dhash

from .images import read_image
from .model import Dataset


def group_near_duplicates(hashes, threshold):
    """Group ids (union-find) for dhash values; None hashes stay alone."""
    parent = list(range(len(hashes)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    known = [i for i, h in enumerate(hashes) if h is not None]
    if known:
        bits = np.array([[(hashes[i] >> b) & 1 for b in range(HASH_BITS)] for i in known], np.float32)
        ones = bits.sum(axis=1)
        for start in range(0, len(known), 1024):    # hamming = |a| + |b| - 2 a.b, in blocks
            block = bits[start:start + 1024]
            distance = ones[start:start + 1024, None] + ones[None, :] - 2 * block @ bits.T
            for a, b in zip(*np.nonzero(distance <= threshold)):
                ra, rb = find(known[start + a]), find(known[b])
                if ra != rb:
                    parent[ra] = rb
    return [find(i) for i in range(len(hashes))]


def split(dataset, ratios=(0.8, 0.2), seed=0, threshold=10):
    """Datasets, one per ratio, sharing the class map; the same input and seed give the same split."""
    ratios = np.array(ratios, float) / sum(ratios)
    hashes = [dhash(read_image(image.path)) if image.path else None for image in dataset.images]
    groups = {}
    for index, group in enumerate(group_near_duplicates(hashes, threshold)):
        groups.setdefault(group, []).append(index)
    classes = len(dataset.classes)

    def counts(indices):
        vector = np.zeros(classes)
        for i in indices:
            for box in dataset.images[i].boxes:
                vector[dataset.class_id(box.label)] += 1
        return vector

    members = list(groups.values())
    random.Random(seed).shuffle(members)
    vectors = [counts(m) for m in members]
    total = np.sum(vectors, axis=0) if vectors else np.zeros(classes)
    rarity = [min((total[c] for c in np.nonzero(v)[0]), default=np.inf) for v in vectors]
    order = sorted(range(len(members)), key=lambda g: (rarity[g], -len(members[g])))
    have = np.zeros((len(ratios), classes))
    have_images = np.zeros(len(ratios))
    n_images = len(dataset.images)
    chosen = [[] for _ in ratios]
    target, target_images = ratios[:, None] * total, ratios * n_images
    for g in order:
        # What each split still lacks, as a share of its own target, so that a 20% split
        # short of 10 boxes counts as much as an 80% split short of 40.
        need = (target - have) / np.maximum(target, 1e-9)
        need_images = (target_images - have_images) / np.maximum(target_images, 1e-9)
        present = vectors[g] > 0
        score = need @ present / max(present.sum(), 1) + need_images
        score[need_images <= 0] -= 4  # a split with all its images takes more only when every split has
        j = int(np.argmax(score))
        chosen[j].extend(members[g])
        have[j] += vectors[g]
        have_images[j] += len(members[g])
    return [Dataset([dataset.images[i] for i in sorted(c)], list(dataset.classes)) for c in chosen]
