"""deeplens-ctl labels and manifest verbs: results on stdout, a sentence and exit 1 on bad input,
and never a partial output file."""
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from control.cli_dataset import labels, manifest

NAMES = "2000 RUB,1000 RUB"


def run(group, *args):
    return CliRunner().invoke(group, [str(a) for a in args])


def only_files(folder):
    """Every file in `folder`, temporary ones included."""
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def small(tmp_path):
    """A folder with one 400x300 image and a manifest line for it."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))

    def manifest_with(*lines):
        (tmp_path / "in.manifest").write_text("\n".join(lines) + "\n")
        return tmp_path / "in.manifest"
    good = json.dumps({"source-ref": "a.jpg", "labels": {"image_size": [{"width": 400, "height": 300, "depth": 3}],
                       "annotations": [{"class_id": 0, "left": 10, "top": 20, "width": 30, "height": 40}]}})
    return tmp_path, manifest_with, good


def test_every_verb_teaches_with_examples():
    for group, verb in ((labels, "import"), (manifest, "build"), (manifest, "merge"), (manifest, "split"),
                        (manifest, "validate"), (manifest, "stats"), (manifest, "preview"), (manifest, "export")):
        result = run(group, verb, "--help")
        assert result.exit_code == 0 and "deeplens-ctl" in result.output, verb


def test_import_export_and_stats_of_the_banknotes_set(banknotes, tmp_path):
    result = run(labels, "import", "-f", "sagemaker", banknotes / "sg-manifest.manifest", "--class-map", NAMES,
                 "-o", tmp_path / "data.manifest", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout) == {"out": str(tmp_path / "data.manifest"), "images": 206, "boxes": 209,
                                         "classes": ["2000 RUB", "1000 RUB"], "problems": 0}
    result = run(manifest, "export", tmp_path / "data.manifest", "-f", "recordio", "-o", tmp_path / "train")
    assert result.exit_code == 0 and (tmp_path / "train.rec").stat().st_size > 0
    result = run(manifest, "stats", tmp_path / "data.manifest", "--json", "--plot", tmp_path / "stats.png")
    assert json.loads(result.stdout)["boxes_per_class"] == {"2000 RUB": 157, "1000 RUB": 52}


def test_validate_exits_1_listing_the_banknotes_broken_frames(banknotes):
    result = run(manifest, "validate", banknotes / "sg-manifest.manifest", "--class-map", NAMES)
    assert result.exit_code == 1
    assert result.stdout.count(": error: source-ref: broken frame") == 2
    assert "sg-manifest.manifest: 2 error(s), 0 warning(s): not usable" in result.stdout


def test_split_writes_train_and_val(banknotes, tmp_path):
    result = run(manifest, "split", banknotes / "sg-manifest.manifest", "-o", tmp_path / "split", "--json")
    counts = json.loads(result.stdout)
    assert counts["train"]["images"] + counts["val"]["images"] == 206
    assert only_files(tmp_path / "split") == ["train.manifest", "val.manifest"]


def test_build_an_unlabelled_manifest_for_s3(small):
    folder, _, _ = small
    result = run(manifest, "build", folder, "-o", folder / "out" / "new.manifest", "--s3-prefix", "s3://b/p")
    assert result.exit_code == 0, result.stderr
    row = json.loads((folder / "out" / "new.manifest").read_text())
    assert row["source-ref"] == "s3://b/p/a.jpg" and row["labels"]["annotations"] == []


def test_truncated_json_line_is_fatal_and_writes_nothing(small):
    folder, manifest_with, good = small
    source = manifest_with(good, good[:40])
    result = run(labels, "import", "-f", "sagemaker", source, "-o", folder / "out.manifest")
    assert result.exit_code == 1
    assert "in.manifest: damaged manifest, nothing imported" in result.stderr
    assert "in.manifest:2: error: not valid JSON" in result.stderr
    assert only_files(folder) == ["a.jpg", "in.manifest"]


def test_missing_image_is_reported_and_strict_makes_it_fatal(small):
    folder, manifest_with, good = small
    source = manifest_with(good, good.replace("a.jpg", "missing.jpg"))
    result = run(labels, "import", "-f", "sagemaker", source, "--strict", "-o", folder / "out.manifest")
    assert result.exit_code == 1
    assert "in.manifest:2: error: source-ref: image not found: missing.jpg" in result.stderr
    assert only_files(folder) == ["a.jpg", "in.manifest"]
    result = run(labels, "import", "-f", "sagemaker", source, "-o", folder / "out.manifest")
    assert result.exit_code == 0 and "1 images" in result.stdout and "image not found" in result.stderr


def test_out_of_range_box_is_named_by_line_and_field(small):
    folder, manifest_with, good = small
    source = manifest_with(good.replace('"left": 10', '"left": 390'))
    result = run(manifest, "validate", source)
    assert result.exit_code == 1
    assert "in.manifest:1: error: labels.annotations[0]: box [390, 20, 420, 60]" in result.stdout
    assert "outside the 400x300 image" in result.stdout
    result = run(labels, "import", "-f", "sagemaker", source, "--strict", "-o", folder / "out.manifest")
    assert result.exit_code == 1 and "outside the 400x300 image" in result.stderr
    assert only_files(folder) == ["a.jpg", "in.manifest"]


def test_unknown_format_lists_the_valid_ones_and_writes_nothing(small):
    folder, manifest_with, good = small
    source = manifest_with(good)
    result = run(labels, "import", "-f", "pascal", source, "-o", folder / "out.manifest")
    assert result.exit_code == 1
    assert "unknown input format 'pascal'; valid formats: coco, images, labelbox" in result.stderr
    result = run(manifest, "export", source, "-f", "tfrecord", "-o", folder / "out")
    assert result.exit_code == 1
    assert "unknown output format 'tfrecord'; valid formats: coco, recordio, sagemaker, voc, yolo" in result.stderr
    assert only_files(folder) == ["a.jpg", "in.manifest"]


def test_drop_invalid_copies_the_good_lines_byte_for_byte(small):
    folder, manifest_with, good = small
    broken = np.random.default_rng(1).integers(0, 255, (300, 400, 3), np.uint8)
    broken[200:] = 128                                                   # a partially decoded capture
    cv2.imwrite(str(folder / "broken.png"), broken)
    odd = '{"source-ref":"a.jpg",  "labels":{"image_size":[{"width":400,"height":300,"depth":3}],' \
          '"annotations":[]}, "extra": "kept as is"}'                   # spacing and extra keys survive
    source = manifest_with(good, good[:40], good.replace("a.jpg", "gone.jpg"), odd,
                           good.replace('"width": 30', '"width": 0'), good.replace("a.jpg", "broken.png"),
                           good.replace('"width": 400', '"width": 200'))
    with open(source, "ab") as f:
        f.write(b'{"source-ref": "\xff\xfe"}\n')                          # not UTF-8
    result = run(manifest, "validate", source, "--drop-invalid", "-o", folder / "clean.manifest")
    assert result.exit_code == 0, result.output
    assert (folder / "clean.manifest").read_text() == f"{good}\n{odd}\n"
    for line, reason in ((2, "not valid JSON"), (3, "source-ref: image not found: gone.jpg"),
                         (5, "labels.annotations[0]: zero-area box"), (6, "source-ref: broken frame"),
                         (7, "labels.image_size: says 200x300"), (8, "not UTF-8 text")):
        assert f"in.manifest:{line}: dropped: {reason}" in result.stdout
    assert "in.manifest:1: warning: source-ref: a.jpg is listed" in result.stdout      # warnings drop nothing
    assert result.stdout.strip().endswith(f"kept 2 of 8 lines -> {folder / 'clean.manifest'}")
    assert run(manifest, "validate", folder / "clean.manifest").exit_code == 0

    result = run(manifest, "validate", source, "--fast", "--drop-invalid", "-o", folder / "fast.manifest", "--json")
    report = json.loads(result.stdout)
    assert (report["kept"], report["lines"]) == (3, 8)                   # --fast cannot see the broken frame
    assert [d["line"] for d in report["dropped"]] == [2, 3, 5, 7, 8]
    assert "zero-area box" in report["dropped"][2]["reason"]


def test_drop_invalid_refuses_to_overwrite_its_input_or_to_keep_nothing(small):
    folder, manifest_with, good = small
    source = manifest_with(good, good[:40])
    for args, message in ((["--drop-invalid"], "--drop-invalid needs -o/--out"),
                          (["-o", folder / "x.manifest"], "-o/--out goes with --drop-invalid"),
                          (["--drop-invalid", "-o", source], "must not be MANIFEST")):
        result = run(manifest, "validate", source, *args)
        assert result.exit_code == 2 and message in result.stderr
    assert source.read_text() == f"{good}\n{good[:40]}\n"
    manifest_with(good.replace("a.jpg", "gone.jpg"), good[:40])
    result = run(manifest, "validate", source, "--drop-invalid", "-o", folder / "empty.manifest")
    assert result.exit_code == 1 and "no line is free of errors; " in result.stderr
    assert only_files(folder) == ["a.jpg", "in.manifest"]
