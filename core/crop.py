"""The crop policy: which region of a frame a model sees when their aspect ratios differ.

- `center` (the default, what the device does): the largest centred region of the model's
  aspect ratio, as `/capture?crop=square` crops training frames; objects outside it are unseen;
- `stretch`: the whole frame resized to the input, as DeepLens Lambdas do with cv2.resize.

Kept apart from core.detector so that settings and command lines can name the choices
without loading MXNet.
"""
CROPS = ("center", "stretch")
DEFAULT_CROP = "center"


def check_crop(crop):
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    return crop


def crop_rect(frame_w, frame_h, model_w, model_h, crop=DEFAULT_CROP):
    """(x, y, w, h) of the frame region fed to the model."""
    if check_crop(crop) == "stretch":
        return 0, 0, frame_w, frame_h
    scale = min(frame_w / model_w, frame_h / model_h)
    w, h = round(model_w * scale), round(model_h * scale)
    return (frame_w - w) // 2, (frame_h - h) // 2, w, h
