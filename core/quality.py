"""Tell broken camera frames from clean ones, for /capture, `pull` and `manifest validate` alike.

A DeepLens MJPEG stream now and then yields a partially decoded frame: the bottom part of the
image is one flat colour (green on the device). Real frames never have a perfectly flat strip:
sensor noise and JPEG texture keep the bottom rows of every clean frame of the shared banknotes
set well above the tolerance used here (per-row spread >= 13 levels there, <= 4 here).
"""
import math

import numpy as np

BAND_MIN_FRACTION = 0.05  # the flat strip must span at least this share of the height
BAND_TOLERANCE = 4  # levels a flat band may stray from its colour after JPEG re-encoding
BLACK_LEVEL = 16  # a frame whose brightest sampled pixel is at most this is black
SAMPLE_STEP = 8  # every 8th row and column is enough to tell black or changed frames


def check_frame(image, previous=None):
    """Why `image` is broken: 'empty', 'black', 'frozen' (byte-identical to `previous`) or
    'band' (a flat strip across the bottom); None when the frame looks clean."""
    if image is None or image.ndim not in (2, 3) or image.size == 0:
        return "empty"
    sample = image[::SAMPLE_STEP, ::SAMPLE_STEP]
    if sample.max() <= BLACK_LEVEL:
        return "black"
    if previous is not None and previous.shape == image.shape \
            and np.array_equal(previous[::SAMPLE_STEP, ::SAMPLE_STEP], sample) \
            and np.array_equal(previous, image):
        return "frozen"
    if has_bottom_band(image):
        return "band"
    return None


def has_bottom_band(image, min_fraction=BAND_MIN_FRACTION):
    """True when the bottom `min_fraction` of the rows is one flat colour (columns sampled)."""
    rows = max(2, math.ceil(image.shape[0] * min_fraction))
    return bool(_flat_rows(image[-rows:], image[-1, 0]).all())


def flat_band_rows(image):
    """How many rows at the bottom are one flat colour: 0 for a clean frame, the band's
    height for a partially decoded one (used where the height is worth reporting)."""
    if not has_bottom_band(image):
        return 0
    flat = _flat_rows(image, image[-1, 0])[::-1]
    return len(flat) if flat.all() else int(np.argmin(flat))


def _flat_rows(rows, colour):
    """Per row: does it stay within BAND_TOLERANCE of `colour` (every 4th column looked at)?"""
    spread = np.abs(rows[:, ::4].astype(np.int16) - np.asarray(colour, np.int16))
    return spread.reshape(len(rows), -1).max(axis=1) <= BAND_TOLERANCE
