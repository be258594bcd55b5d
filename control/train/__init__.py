"""Training, evaluation and packaging of SSD detectors, locally on the CPU or on SageMaker.

One module per idea: `data` (manifest to samples, batches), `transforms` (augmentation),
`loss` (MultiBox targets, hard negative mining, the loss), `metrics` (the detection metric),
`trainer` (the loop and its callbacks), `plots` (cv2 charts), `inference` (evaluation of a
package through core.detector), `sagemaker` (SageMaker artifacts and training jobs).
"""
from core.errors import DeepLensError


class TrainError(DeepLensError):
    """A user-facing problem with a manifest, a model folder or a run: the message says what."""
