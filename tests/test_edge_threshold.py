"""The live threshold: validated, per class, and kept across restarts."""
import contextlib
import json
import subprocess

import pytest

from core.errors import DiskFull, InvalidInput
from edge.threshold import Threshold


def test_per_class_overrides_the_default(tmp_path):
    threshold = Threshold(tmp_path, 0.4)
    threshold.update({"per_class": {"note_2000": 0.8}})
    assert threshold.passes("note_1000", 0.5)
    assert not threshold.passes("note_2000", 0.5)


def test_a_field_left_out_keeps_its_value(tmp_path):
    threshold = Threshold(tmp_path, 0.4)
    threshold.update({"per_class": {"a": 0.9}})
    assert threshold.update({"default": 0.5}) == {"default": 0.5, "per_class": {"a": 0.9}}
    assert threshold.update({"per_class": {}}) == {"default": 0.5, "per_class": {}}


@pytest.mark.parametrize("body, field", [
    ({"default": -0.1}, "default"), ({"default": True}, "default"), ({"default": "0.5"}, "default"),
    ({"per_class": {"a": 2}}, "per_class.a"), ({"per_class": [0.5]}, "per_class"), ({"defualt": 0.5}, "defualt"),
])
def test_bad_values_are_refused_and_change_nothing(tmp_path, body, field):
    threshold = Threshold(tmp_path, 0.4)
    with pytest.raises(InvalidInput) as caught:
        threshold.update(body)
    assert caught.value.field == field
    assert threshold.to_json() == {"default": 0.4, "per_class": {}}
    assert not (tmp_path / "threshold.json").exists()


def test_saved_threshold_is_loaded_and_a_corrupt_file_is_ignored(tmp_path):
    Threshold(tmp_path, 0.4).update({"default": 0.65})
    assert json.loads((tmp_path / "threshold.json").read_text())["default"] == 0.65
    assert Threshold(tmp_path, 0.4).default == 0.65
    (tmp_path / "threshold.json").write_text("{trunc")
    assert Threshold(tmp_path, 0.4).default == 0.4


def test_per_class_values_name_only_the_models_classes(tmp_path):
    threshold = Threshold(tmp_path, 0.4, classes=lambda: ["note_2000", "note_1000"])
    with pytest.raises(InvalidInput, match="the model has no class '1000' \\(and 1 more\\); its classes: "
                                           "note_2000, note_1000") as caught:
        threshold.update({"per_class": {"1000": 0.7, "2000": 0.6}})
    assert caught.value.code == "unknown_class" and caught.value.field == "per_class.1000"
    assert threshold.update({"per_class": {"note_1000": 0.7}})["per_class"] == {"note_1000": 0.7}
    without_model = Threshold(tmp_path / "other", 0.4)
    with pytest.raises(InvalidInput, match="at most 1000"):
        without_model.update({"per_class": {f"c{i}": 0.5 for i in range(1001)}})


@pytest.fixture
def full_disk(tmp_path):
    """A tiny real tmpfs, filled up."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tiny tmpfs to fill ({mounted.stderr.strip()}); needs root or CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_change_that_cannot_be_stored_is_not_applied(full_disk):
    threshold = Threshold(full_disk, 0.4)
    threshold.update({"default": 0.5})
    with open(full_disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 4096)
    with pytest.raises(DiskFull, match="could not be stored, so it was not changed"):
        threshold.update({"default": 0.9, "per_class": {"a": 0.1}})
    assert threshold.to_json() == {"default": 0.5, "per_class": {}}
    assert Threshold(full_disk, 0.4).default == 0.5


def test_leftovers_of_a_killed_write_are_removed_at_start(tmp_path):
    (tmp_path / ".threshold.json.abc123.tmp").write_text('{"default": 0.')
    Threshold(tmp_path, 0.4)
    assert list(tmp_path.iterdir()) == []
