"""The detection metric: COCO figures against pycocotools, VOC figures on hand-checked cases."""
import contextlib
import io

import numpy as np
import pytest

from control.train.metrics import DetectionMetric, ap_11_points, ap_all_points


def synthetic(seed, images=25, classes=3):
    """Truth boxes in pixels and noisy detections of them, with misses, duplicates and strays."""
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(images):
        n = rng.integers(0, 5)
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(10, 100, (n, 2))
        gts = np.column_stack([rng.integers(0, classes, n), xy, xy + wh])
        dets = []
        for g in gts:
            for _ in range(rng.integers(0, 3)):      # 0: missed, 2: a duplicate
                jitter = rng.normal(0, 6, 4)
                cls = g[0] if rng.random() < 0.85 else rng.integers(0, classes)
                box = g[1:] + jitter
                dets.append([cls, rng.random(), *np.minimum(box[:2], box[2:]), *np.maximum(box[:2], box[2:])])
        for _ in range(rng.integers(0, 3)):          # strays
            x, y = rng.uniform(0, 250, 2)
            dets.append([rng.integers(0, classes), rng.random() * 0.6, x, y, x + 30, y + 40])
        data.append((np.array(dets).reshape(-1, 6), gts))
    return data


def coco_reference(data, classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images, annotations, results = [], [], []
    for i, (dets, gts) in enumerate(data):
        images.append({"id": i, "width": 300, "height": 300})
        for g in gts:
            w, h = g[3] - g[1], g[4] - g[2]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(g[0]),
                                "bbox": [g[1], g[2], w, h], "area": w * h, "iscrowd": 0})
        results += [{"image_id": i, "category_id": int(d[0]), "score": float(d[1]),
                     "bbox": [d[2], d[3], d[4] - d[2], d[5] - d[3]]} for d in dets]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c, "name": str(c)} for c in range(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_matches_pycocotools(seed):
    data = synthetic(seed)
    metric = DetectionMetric(["a", "b", "c"])
    for dets, gts in data:
        metric.update(dets, gts)
    result = metric.get()
    stats = coco_reference(data, 3)
    assert result.map_coco == pytest.approx(stats[0], abs=1e-9)
    assert np.mean([r["ap_coco"] for r in result.per_class]) == pytest.approx(stats[0], abs=1e-9)


def test_voc_ap_on_a_known_curve():
    # 4 truths; detections hit, miss, hit, hit: recall .25 .25 .5 .75, precision 1 .5 .67 .75
    recall, precision = np.array([.25, .25, .5, .75]), np.array([1, .5, 2 / 3, .75])
    assert ap_all_points(recall, precision) == pytest.approx(.25 * 1 + .5 * .75)
    assert ap_11_points(recall, precision) == pytest.approx((3 * 1 + 5 * .75) / 11)


def test_perfect_detections_and_the_confusion_table():
    metric = DetectionMetric(["cat", "dog"], threshold=0.5)
    metric.update([[0, .9, 10, 10, 50, 50], [1, .8, 60, 60, 90, 90], [1, .7, 200, 200, 220, 220]],
                  [[0, 10, 10, 50, 50], [1, 60, 60, 90, 90], [0, 100, 100, 140, 140]])
    metric.update([[0, .95, 60, 60, 90, 90], [1, .3, 10, 10, 50, 50]], [[1, 60, 60, 90, 90]])
    result = metric.get()
    # truth cat: 1 found as cat, 1 missed; truth dog: 1 found, 1 called cat; a stray dog box
    assert result.confusion.tolist() == [[1, 0, 1], [1, 1, 0], [0, 1, 0]]
    assert result.per_class[0]["recall"] == pytest.approx(.5)
    assert result.per_class[1]["precision"] == pytest.approx(.5)
    assert result.precision == pytest.approx(2 / 4) and result.recall == pytest.approx(2 / 4)
    assert 0 < result.best_f1 <= 1
    assert "confusion" in result.table()
