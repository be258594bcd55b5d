"""Manifests: what validate finds (line and field), how references resolve, how build writes them."""
import json

import cv2
import numpy as np
import pytest

from control.dataset import Collector, DatasetError, Problem, read, write
from control.dataset.sagemaker import drop_invalid, validate

NAMES = ["2000 RUB", "1000 RUB"]


def line(ref, boxes, width=300, height=300, attribute="cash", **extra):
    return json.dumps({"source-ref": ref, attribute: {"image_size": [{"width": width, "height": height, "depth": 3}],
                       "annotations": [dict(zip(("class_id", "left", "top", "width", "height"), b)) for b in boxes]},
                       **extra})


def problems_of(path, **options):
    return [(p.severity, p.line, p.field, p.message) for p in validate(Collector(**options), path)]


def test_validate_finds_the_two_broken_frames_of_the_banknotes_set(banknotes):
    """The shared manifest is well formed; its real problems are two partially decoded frames.

    Its source-refs are s3:// URIs; the images are found beside the manifest by their tail.
    """
    found = problems_of(banknotes / "sg-manifest.manifest", class_names=NAMES)
    assert [(severity, number, field) for severity, number, field, _ in found] == [
        ("error", 54, "source-ref"), ("error", 201, "source-ref")]
    assert "2000_front_44.jpeg are one flat colour" in found[0][3]
    assert "1000_back_27.jpeg are one flat colour" in found[1][3]


def test_validate_without_a_class_map_warns_that_ids_have_no_names(banknotes):
    found = problems_of(banknotes / "sg-manifest.manifest")
    assert found[0][:3] == ("warning", 1, "cash-metadata")
    assert sum(severity == "error" for severity, *_ in found) == 2


def test_validate_names_line_and_field_of_each_problem(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))
    metadata = {"cash-metadata": {"class-map": {"0": "2000 RUB"}}}
    (tmp_path / "m.manifest").write_text("\n".join([
        line("a.jpg", [(0, 10, 10, 50, 50)], width=400, **metadata),        # fine
        line("a.jpg", [(0, 380, 10, 50, 50)], width=400, **metadata),       # past the right edge
        line("a.jpg", [(1, 10, 10, 50, 50)], width=400, **metadata),        # id 1 not in the class-map
        line("a.jpg", [(0, 10, 10, 0, 50)], width=400, **metadata),         # zero width
        line("a.jpg", [(0, 10, 10, 50, 50)], **metadata),                   # says 300 wide
        line("gone.jpg", [(0, 10, 10, 50, 50)], **metadata),                # no such file
        '{"source-ref": "a.jpg", "cash": {"image_size": [{"wid',            # truncated
    ]) + "\n")
    found = problems_of(tmp_path / "m.manifest")
    assert [(severity, number, field) for severity, number, field, _ in found] == [
        ("warning", 1, "source-ref"),
        ("error", 2, "cash.annotations[0]"),
        ("error", 3, "cash.annotations[0].class_id"),
        ("error", 4, "cash.annotations[0]"),
        ("error", 5, "cash.image_size"),
        ("error", 6, "source-ref"),
        ("error", 7, None),
    ]
    messages = dict(((number, field), message) for _, number, field, message in found)
    assert "a.jpg is listed 5 times (lines 1, 2, 3, 4, 5)" in messages[(1, "source-ref")]
    assert "not valid JSON" in messages[(7, None)]
    assert "outside the 400x300 image" in messages[(2, "cash.annotations[0]")]
    assert "class id 1 is not in the class-map" in messages[(3, "cash.annotations[0].class_id")]
    assert "zero-area box" in messages[(4, "cash.annotations[0]")]
    assert "image not found: gone.jpg" in messages[(6, "source-ref")]
    assert "says 300x300 but" in messages[(5, "cash.image_size")]


def test_written_manifests_carry_metadata_and_local_or_s3_references(tmp_path, banknotes):
    dataset, _ = read("sagemaker", banknotes / "sg-manifest.manifest", class_names=NAMES)
    write("sagemaker", dataset, tmp_path / "local.manifest")
    write("sagemaker", dataset, tmp_path / "s3.manifest", s3_prefix="s3://bucket/frames/", attribute="cash")
    local = json.loads((tmp_path / "local.manifest").read_text().splitlines()[0])
    remote = json.loads((tmp_path / "s3.manifest").read_text().splitlines()[0])
    assert (tmp_path / local["source-ref"]).resolve() == (banknotes / "2000_front" / "2000_front_141.jpeg").resolve()
    assert remote["source-ref"] == "s3://bucket/frames/2000_front/2000_front_141.jpeg"
    assert remote["cash"]["annotations"] == [{"class_id": 0, "left": 15, "top": 144, "width": 71, "height": 112}]
    metadata = remote["cash-metadata"]
    assert metadata["class-map"] == {"0": "2000 RUB", "1": "1000 RUB"}
    assert (metadata["type"], metadata["human-annotated"]) == ("groundtruth/object-detection", "yes")
    assert "creation-date" in metadata


def test_s3_references_not_found_locally_are_kept_as_they_are(tmp_path):
    (tmp_path / "m.manifest").write_text(line("s3://bucket/elsewhere/x.jpg", [(0, 1, 1, 10, 10)]) + "\n")
    dataset, problems = read("sagemaker", tmp_path / "m.manifest")
    assert [p.severity for p in problems] == ["warning"]
    write("sagemaker", dataset, tmp_path / "out.manifest")
    assert json.loads((tmp_path / "out.manifest").read_text())["source-ref"] == "s3://bucket/elsewhere/x.jpg"


def test_drop_invalid_keeps_whole_file_problems_for_a_person(tmp_path):
    """An error without a line is about the whole file: dropping lines cannot fix it, so nothing is written."""
    source = tmp_path / "m.manifest"
    source.write_bytes(b'{"a": 1}\r\n\n{"b": 2}')
    assert drop_invalid(source, [Problem("warning", str(source), 1, None, "w")], tmp_path / "out") == (2, 2, [])
    assert (tmp_path / "out").read_bytes() == source.read_bytes()
    whole = Problem("error", str(source), None, None, "the class-map disagrees between lines")
    with pytest.raises(DatasetError, match="errors about the whole file, not single lines"):
        drop_invalid(source, [whole], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
