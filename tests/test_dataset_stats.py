"""manifest stats and preview: numbers a person checks, and PNGs drawn with OpenCV alone."""
import cv2

from control.dataset import read
from control.dataset.preview import contact_sheet
from control.dataset.stats import format_stats, plot, stats

NAMES = ["2000 RUB", "1000 RUB"]


def test_stats_of_the_banknotes_set(banknotes, tmp_path):
    dataset, _ = read("sagemaker", banknotes / "sg-manifest.manifest", class_names=NAMES)
    result = stats(dataset)
    assert (result["images"], result["boxes"]) == (206, 209)
    assert result["boxes_per_class"] == {"2000 RUB": 157, "1000 RUB": 52}
    assert result["boxes_per_image"] == {"1": 203, "2": 3}
    assert result["image_sizes"] == {"300x300": 206}
    assert sum(result["box_side_px"].values()) == 209
    assert "boxes per class:" in format_stats(result)
    plot(result, tmp_path / "stats.png")
    assert cv2.imread(str(tmp_path / "stats.png")).shape[0] > 100


def test_preview_draws_a_grid_of_the_first_images(banknotes, tmp_path):
    dataset, _ = read("sagemaker", banknotes / "sg-manifest.manifest", class_names=NAMES)
    assert contact_sheet(dataset, tmp_path / "sheet.png", columns=4, tile=100, limit=8) == 8
    assert cv2.imread(str(tmp_path / "sheet.png")).shape == (2 * 118, 400, 3)
