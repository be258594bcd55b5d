"""Detection metrics as a stateful object (reset / update / get), one pass for all figures:
VOC AP@0.5 (11-point and all-point), COCO AP@[.5:.95] (computed as pycocotools does: greedy
best-IoU matching in score order, 101 recall points, at most `max_dets` per image and class),
precision and recall at the deployed threshold, the best-F1 threshold and a confusion table.
Boxes are corners in one coordinate space per image (pixels for COCO-comparable figures)."""
import dataclasses

import numpy as np

from core.boxes import box_iou

COCO_IOUS = np.round(np.linspace(0.5, 0.95, 10), 2)
RECALL_POINTS = np.linspace(0, 1, 101)


def _match(ious, iou_threshold):
    """For the IoUs (K,M) of score-sorted dets with gts, the matched gt index per det, -1 if none.
    Only dets that overlap some gt enough can match: the greedy pass visits just those."""
    matched = np.full(len(ious), -1)
    if not ious.size:
        return matched
    threshold, taken = min(iou_threshold, 1 - 1e-10), np.zeros(ious.shape[1], bool)
    for d in np.flatnonzero(ious.max(axis=1) >= threshold):
        candidates = np.where(taken, -1, ious[d])
        best = len(candidates) - 1 - np.argmax(candidates[::-1])  # the last of equals, as pycocotools
        if candidates[best] >= threshold:
            matched[d], taken[best] = best, True
    return matched


def _pr(scores, hits, num_gt):
    """Recall and precision along detections sorted by score (ties keep image order)."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    return tp / max(num_gt, 1), tp / np.maximum(tp + fp, np.spacing(1)), scores[order]


def _envelope(precision):
    return np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision


def ap_all_points(recall, precision):
    """Area under the monotone precision envelope (VOC2010+)."""
    r = np.concatenate([[0], recall, [1]])
    p = _envelope(np.concatenate([[0], precision, [0]]))
    steps = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def ap_11_points(recall, precision):
    """VOC2007: mean of the best precision at recall >= 0, 0.1, ..., 1."""
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0 for t in np.linspace(0, 1, 11)]))


def ap_coco(recall, precision):
    """pycocotools' 101-point interpolated AP."""
    envelope = _envelope(precision)
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0 for i in index]))


@dataclasses.dataclass
class EvalResult:
    """All figures of one evaluation; `per_class` rows and `confusion` are in class_id order."""
    classes: list
    threshold: float
    map50: float
    map50_voc07: float
    map_coco: float
    precision: float
    recall: float
    best_threshold: float
    best_f1: float
    per_class: list
    confusion: np.ndarray       # rows truth (classes + background), columns predicted (classes + missed)
    pr_curves: dict             # class name -> (recall, precision) at IoU 0.5

    def to_json(self):
        data = dataclasses.asdict(self)
        data["confusion"] = self.confusion.tolist()
        data["pr_curves"] = {k: [r.tolist(), p.tolist()] for k, (r, p) in self.pr_curves.items()}
        return data

    def summary(self):
        return {k: round(getattr(self, k), 4) for k in ("map50", "map50_voc07", "map_coco", "precision",
                                                        "recall", "best_threshold", "best_f1")}

    def table(self):
        """A plain-text report: per-class figures, then the confusion table."""
        lines = [f"{'class':<16}{'images':>7}{'boxes':>7}{'AP50':>8}{'AP50/07':>9}{'AP':>8}"
                 f"{'P@thr':>8}{'R@thr':>8}"]
        for row in self.per_class:
            lines.append(f"{row['name']:<16}{row['images']:>7}{row['boxes']:>7}{row['ap50']:>8.3f}"
                         f"{row['ap50_voc07']:>9.3f}{row['ap_coco']:>8.3f}{row['precision']:>8.3f}{row['recall']:>8.3f}")
        lines.append(f"{'all':<16}{'':>7}{'':>7}{self.map50:>8.3f}{self.map50_voc07:>9.3f}{self.map_coco:>8.3f}"
                     f"{self.precision:>8.3f}{self.recall:>8.3f}")
        lines.append(f"threshold {self.threshold:g}; best F1 {self.best_f1:.3f} at threshold {self.best_threshold:.3f}")
        names = list(self.classes)
        lines.append("confusion (rows truth, columns predicted, IoU >= 0.5, score >= threshold):")
        width = max(10, *(len(n) + 2 for n in names))
        lines.append(" " * width + "".join(f"{n:>{width}}" for n in names + ["missed"]))
        for name, row in zip(names + ["background"], self.confusion):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}d}" for v in row))
        return "\n".join(lines)


class DetectionMetric:
    def __init__(self, classes, threshold=0.5, max_dets=100):
        self.classes, self.threshold, self.max_dets = list(classes), threshold, max_dets
        self.reset()

    def reset(self):
        self._images = []

    def update(self, detections, truths):
        """One image: detection rows [class, score, xmin, ymin, xmax, ymax] (class -1 ignored)
        and truth rows [class, xmin, ymin, xmax, ymax] (class -1 padding ignored)."""
        dets = np.asarray(detections, np.float64).reshape(-1, 6)
        gts = np.asarray(truths, np.float64).reshape(-1, 5)
        dets = dets[dets[:, 0] >= 0]
        self._images.append((dets[np.argsort(-dets[:, 1], kind="mergesort")], gts[gts[:, 0] >= 0]))

    def _class_hits(self, c):
        """Scores, hit flags (one row per COCO IoU threshold) and gt count of class c over all images."""
        scores, hits, num_gt = [], [], 0
        for dets, gts in self._images:
            d = dets[dets[:, 0] == c][:self.max_dets]
            g = gts[gts[:, 0] == c]
            num_gt += len(g)
            scores.append(d[:, 1])
            ious = box_iou(d[:, 2:], g[:, 1:])
            hits.append(np.array([_match(ious, iou) >= 0 for iou in COCO_IOUS]).reshape(len(COCO_IOUS), len(d)))
        return np.concatenate(scores), np.concatenate(hits, axis=1), num_gt

    def get(self):
        per_class, pr_curves = [], {}
        pooled_scores, pooled_hits, total_gt = [], [], 0
        for c, name in enumerate(self.classes):
            num_images = sum(bool((gts[:, 0] == c).any()) for _, gts in self._images)
            row = {"name": name, "images": num_images}
            coco = []
            scores, hits_at, num_gt = self._class_hits(c)
            for iou, hits in zip(COCO_IOUS, hits_at):
                recall, precision, sorted_scores = _pr(scores, hits, num_gt)
                coco.append(ap_coco(recall, precision))
                if iou == 0.5:
                    row.update(boxes=num_gt, ap50=ap_all_points(recall, precision),
                               ap50_voc07=ap_11_points(recall, precision))
                    above = sorted_scores >= self.threshold
                    tp = int(hits[scores >= self.threshold].sum())
                    row.update(precision=tp / max(int(above.sum()), 1), recall=tp / max(num_gt, 1))
                    pr_curves[name] = (recall, precision)
                    pooled_scores.append(scores), pooled_hits.append(hits)
                    total_gt += num_gt
            row["ap_coco"] = float(np.mean(coco))
            per_class.append(row)
        scored = [r for r in per_class if r["boxes"]]   # as pycocotools: classes without truth do not count
        mean = lambda key: float(np.mean([r[key] for r in scored])) if scored else 0.0  # noqa: E731
        scores, hits = np.concatenate(pooled_scores), np.concatenate(pooled_hits)
        recall, precision, sorted_scores = _pr(scores, hits, total_gt)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1)) if len(f1) else None
        above = scores >= self.threshold
        return EvalResult(
            classes=self.classes, threshold=self.threshold,
            map50=mean("ap50"), map50_voc07=mean("ap50_voc07"), map_coco=mean("ap_coco"),
            precision=float(hits[above].sum() / max(above.sum(), 1)), recall=float(hits[above].sum() / max(total_gt, 1)),
            best_threshold=float(sorted_scores[best]) if best is not None else 1.0,
            best_f1=float(f1[best]) if best is not None else 0.0,
            per_class=per_class, confusion=self._confusion(), pr_curves=pr_curves)

    def _confusion(self):
        k = len(self.classes)
        table = np.zeros((k + 1, k + 1), int)
        for dets, gts in self._images:
            dets = dets[dets[:, 1] >= self.threshold]
            matched = _match(box_iou(dets[:, 2:], gts[:, 1:]), 0.5)
            for det, m in zip(dets, matched):
                table[int(gts[m, 0]) if m >= 0 else k, int(det[0])] += 1
            for g in np.setdiff1d(np.arange(len(gts)), matched):
                table[int(gts[g, 0]), k] += 1
        return table
