"""MultiBox targets with hard negative mining, and the SSD loss on them."""
import mxnet as mx
from mxnet import autograd


class SSDLoss:
    """Softmax cross-entropy on positives and mined negatives plus smooth-L1 on positive boxes,
    both divided by the number of positives in the batch (the SSD paper's normalisation).

    Targets come from MultiBoxTarget: bipartite + IoU >= `overlap` matching, negatives ranked by
    lowest background probability, `negative_ratio` of them per positive, the rest ignored.
    """

    def __init__(self, overlap=0.5, negative_ratio=3.0):
        self.overlap, self.negative_ratio = overlap, negative_ratio

    def __call__(self, class_preds, box_preds, anchors, labels):
        """Return (total, class loss, box loss) as scalars of the batch."""
        with autograd.pause():
            box_target, box_mask, class_target = mx.nd.contrib.MultiBoxTarget(
                anchors, labels, class_preds.transpose((0, 2, 1)), overlap_threshold=self.overlap,
                negative_mining_ratio=self.negative_ratio, negative_mining_thresh=0.5)
            num_pos = mx.nd.maximum((class_target > 0).sum(), 1)
            valid = class_target >= 0
        log_probs = mx.nd.log_softmax(class_preds, axis=-1)
        picked = mx.nd.pick(log_probs, mx.nd.maximum(class_target, 0), axis=-1)
        class_loss = -(picked * valid).sum() / num_pos
        box_loss = mx.nd.smooth_l1((box_preds - box_target) * box_mask, scalar=1.0).sum() / num_pos
        return class_loss + box_loss, class_loss, box_loss
