"""The live threshold: validated, per class, and kept across restarts."""
import json

import pytest

from core.errors import InvalidInput
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
