"""core.quality.check_frame: broken frames are named, clean real and synthetic frames pass."""
import cv2
import numpy as np
import pytest

from core.quality import check_frame
from shims.camera import FAULTS, source_from_spec

# The two frames of the shared set that a broken MJPEG decode left with a flat green band at
# the bottom (checked by eye: 107 and 44 rows of BGR (0, 135, 0)).
BANDED = {"1000_back_27.jpeg", "2000_front_44.jpeg"}


def test_only_the_real_frames_with_a_decode_band_are_flagged(banknotes):
    images = sorted(banknotes.glob("*/*.jpeg"))
    assert len(images) > 200
    flagged = {path.name: check_frame(cv2.imread(str(path))) for path in images}
    assert {name for name, reason in flagged.items() if reason} == BANDED
    assert {flagged[name] for name in BANDED} == {"band"}


def test_clean_synthetic_frames_pass_even_beside_their_predecessor():
    with source_from_spec("synthetic:5?size=480x270") as camera:
        previous = None
        for _ in range(30):
            image = camera.read().image
            assert check_frame(image, previous) is None
            previous = image


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "drop"])
def test_every_injected_fault_that_yields_a_frame_is_flagged(fault):
    with source_from_spec(f"synthetic:1?size=480x270&faults={fault}:1") as camera:
        first, second = camera.read(), camera.read()
    assert second.fault == fault
    assert check_frame(second.image, first.image) == {"band": "band", "black": "black", "freeze": "frozen"}[fault]


def test_a_dropped_read_gives_no_frame_at_all():
    with source_from_spec("synthetic:1?size=480x270&faults=drop:1") as camera:
        assert camera.read() is None


def test_a_band_must_span_a_meaningful_height():
    image = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    image[-10:] = (0, 135, 0)  # 3% of the height: could be a real flat object, not flagged
    assert check_frame(image) is None
    image[-15:] = (0, 135, 0)  # 5%
    assert check_frame(image) == "band"


def test_a_changed_pixel_is_not_a_frozen_frame():
    image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    changed = image.copy()
    changed[3, 5, 1] ^= 1  # off the sampling grid: the full comparison must catch it
    assert check_frame(image, image.copy()) == "frozen"
    assert check_frame(changed, image) is None


@pytest.mark.parametrize("image", [None, np.zeros((0, 0, 3), np.uint8), np.zeros(5, np.uint8)])
def test_no_image_is_empty(image):
    assert check_frame(image) == "empty"
