"""manifest split: same input and seed, same split; near-duplicates together; every class on each side."""
import cv2
import numpy as np

from control.dataset import Box, Dataset, Image
from control.dataset.images import read_image
from control.dataset.split import group_near_duplicates, split
from core.dhash import dhash


def scenes(folder, count=12):
    """`count` distinct scenes, each captured twice with a little sensor noise; class by scene parity."""
    rng = np.random.default_rng(1)
    images = []
    for scene in range(count):
        base = cv2.resize(rng.integers(0, 255, (12, 16, 3), np.uint8), (160, 120), interpolation=cv2.INTER_CUBIC)
        for shot in range(2):
            path = str(folder / f"scene{scene:02d}_{shot}.png")
            cv2.imwrite(path, np.clip(base + rng.normal(0, 1.5, base.shape), 0, 255).astype(np.uint8))
            images.append(Image(path, 160, 120, [Box("odd" if scene % 2 else "even", 10, 10, 50, 50)]))
    return Dataset(images, ["even", "odd"])


def test_near_duplicate_captures_never_straddle_the_split(tmp_path):
    dataset = scenes(tmp_path)
    train, val = split(dataset, (0.75, 0.25), seed=3)
    assert len(train.images) + len(val.images) == 24
    scene_sides = {}
    for side, part in (("train", train), ("val", val)):
        for image in part.images:
            scene_sides.setdefault(image.path.rsplit("_", 1)[0], set()).add(side)
    assert all(len(sides) == 1 for sides in scene_sides.values())
    assert {b.label for i in val.images for b in i.boxes} == {"even", "odd"}   # stratified
    assert len(val.images) == 6


def test_same_seed_same_split_and_another_seed_another(tmp_path):
    dataset = scenes(tmp_path)
    paths = lambda parts: [[i.path for i in p.images] for p in parts]  # noqa: E731
    assert paths(split(dataset, (0.5, 0.5), seed=1)) == paths(split(dataset, (0.5, 0.5), seed=1))
    assert paths(split(dataset, (0.5, 0.5), seed=1)) != paths(split(dataset, (0.5, 0.5), seed=2))


def test_grouping_is_transitive_and_respects_the_threshold(tmp_path):
    dataset = scenes(tmp_path, count=3)
    hashes = [dhash(read_image(i.path)) for i in dataset.images]
    groups = group_near_duplicates(hashes + [None], threshold=10)
    assert groups[0] == groups[1] != groups[2] == groups[3] != groups[4] == groups[5]
    assert groups[6] not in groups[:6]
    assert len(set(group_near_duplicates(hashes, threshold=0))) >= 3


def test_every_class_gets_its_share_on_the_real_banknotes(banknotes):
    """The 1000 RUB frames are few and look alike (a 20-frame near-duplicate group): each split
    must still get about its ratio of them, not whatever the big groups leave over."""
    from control.dataset.formats import read
    dataset, _ = read("sagemaker", banknotes / "sg-manifest.manifest", class_names=["2000 RUB", "1000 RUB"])
    train, val = split(dataset, (0.8, 0.2), seed=0)
    for name in dataset.classes:
        in_val = sum(b.label == name for i in val.images for b in i.boxes)
        in_all = sum(b.label == name for i in dataset.images for b in i.boxes)
        assert 0.12 <= in_val / in_all <= 0.3, (name, in_val, in_all)
    assert 0.15 <= len(val.images) / len(dataset.images) <= 0.25
