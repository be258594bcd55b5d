"""Readers and writers by format key: round trips without loss, merging by class name."""
import json

import cv2
import mxnet as mx
import numpy as np
import pytest

from control.dataset import WRITERS, DatasetError, parse_class_map, read, write

NAMES = ["2000 RUB", "1000 RUB"]          # the banknotes README's class map
EXPORT_PATH = {"sagemaker": "out.manifest", "coco": "coco.json", "voc": "voc", "yolo": "yolo",
               "recordio": "rec/train.lst"}


def boxes_by_image(dataset):
    return {image.path: sorted((b.label, b.xmin, b.ymin, b.xmax, b.ymax) for b in image.boxes)
            for image in dataset.images}


def image_file(folder, name, width=640, height=480):
    path = folder / name
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8))
    return path


@pytest.fixture
def banknotes_dataset(banknotes):
    dataset, problems = read("sagemaker", banknotes / "sg-manifest.manifest", class_names=NAMES)
    assert problems == []
    assert (len(dataset.images), dataset.box_count) == (206, 209)
    return dataset


@pytest.mark.parametrize("format", sorted(WRITERS))
def test_banknotes_survive_export_and_import_in_every_format(banknotes_dataset, tmp_path, format):
    out = tmp_path / EXPORT_PATH[format]
    write(format, banknotes_dataset, out)
    back, problems = read(format, out)
    assert problems == []
    assert back.classes == NAMES
    expected, actual = boxes_by_image(banknotes_dataset), boxes_by_image(back)
    assert actual.keys() == expected.keys() and len(actual) == 206
    assert sum(map(len, actual.values())) == 209
    for path, boxes in expected.items():
        assert [b[0] for b in actual[path]] == [b[0] for b in boxes], path
        assert np.allclose([b[1:] for b in actual[path]], [b[1:] for b in boxes], atol=0.5), path


def test_recordio_reads_back_with_mxnet_imagedetrecorditer(banknotes_dataset, tmp_path):
    write("recordio", banknotes_dataset, tmp_path / "train")
    assert open(tmp_path / "train.lst").readline().split("\t")[1:3] == ["2", "5"]
    records = mx.io.ImageDetRecordIter(path_imgrec=str(tmp_path / "train.rec"), data_shape=(3, 300, 300),
                                       batch_size=206, shuffle=False)
    batch = next(records)
    for image, row in zip(banknotes_dataset.images, batch.label[0].asnumpy()):
        # The iterator prepends [3, height, width, label length]; then ours: [2, 5, objects...].
        assert tuple(row[4:6]) == (2, 5)
        objects = row[6:6 + 5 * len(image.boxes)].reshape(-1, 5)
        expected = [(banknotes_dataset.class_id(b.label), b.xmin / 300, b.ymin / 300, b.xmax / 300, b.ymax / 300)
                    for b in image.boxes]
        assert np.allclose(objects, expected, atol=1e-4), image.path


def test_two_labelbox_projects_with_different_class_orders_merge_by_name(tmp_path):
    """One legacy JSON export and one NDJSON export, each project with its own class order."""
    image_file(tmp_path, "front.jpg")                      # 640x480: not square
    image_file(tmp_path, "back.jpg")
    legacy = [{"ID": "l1", "DataRow ID": "d1", "Labeled Data": "https://storage.labelbox.com/x/front.jpg",
               "External ID": "front.jpg", "Skipped": False, "Project Name": "front",
               "Label": {"objects": [
                   {"featureId": "f1", "schemaId": "s1", "title": "1000 RUB", "value": "1000_rub",
                    "bbox": {"top": 400, "left": 500, "height": 60, "width": 120}},
                   {"featureId": "f2", "schemaId": "s2", "title": "2000 RUB", "value": "2000_rub",
                    "bbox": {"top": 10, "left": 20, "height": 100, "width": 200}}], "classifications": []}},
              {"ID": "l2", "External ID": "skipped.jpg", "Skipped": True, "Label": "Skip"}]
    (tmp_path / "front.json").write_text(json.dumps(legacy))
    ndjson = {"data_row": {"id": "d2", "global_key": "back.jpg", "external_id": "back.jpg",
                           "row_data": "https://storage.labelbox.com/x/back.jpg"},
              "media_attributes": {"height": 480, "width": 640, "mime_type": "image/jpeg"},
              "projects": {"p2": {"name": "back", "labels": [{"id": "lb1", "annotations": {"objects": [
                  {"feature_id": "f3", "feature_schema_id": "s9", "name": "2000 rub",
                   "annotation_kind": "ImageBoundingBox",
                   "bounding_box": {"top": 295.0, "left": 540.0, "height": 18.0, "width": 23.0}},
                  {"feature_id": "f4", "feature_schema_id": "s8", "name": "1000 RUB",
                   "annotation_kind": "ImageBoundingBox",
                   "bounding_box": {"top": 100.5, "left": 0.0, "height": 379.5, "width": 640.0}}],
                  "classifications": [], "relationships": []}}]}}}
    (tmp_path / "back.ndjson").write_text(json.dumps(ndjson) + "\n")

    front, _ = read("labelbox", tmp_path / "front.json")
    back, _ = read("labelbox-ndjson", tmp_path / "back.ndjson")
    assert front.classes == ["1000 RUB", "2000 RUB"]
    write("sagemaker", front, tmp_path / "front.manifest")
    write("sagemaker", back, tmp_path / "back.manifest")

    merged, problems = read("sagemaker", [tmp_path / "front.manifest", tmp_path / "back.manifest"], class_names=NAMES)
    assert problems == []
    write("sagemaker", merged, tmp_path / "all.manifest")
    rows = [json.loads(line) for line in (tmp_path / "all.manifest").read_text().splitlines()]
    assert {row["labels-metadata"]["class-map"]["0"] for row in rows} == {"2000 RUB"}
    by_image = {row["source-ref"]: row["labels"] for row in rows}
    assert by_image["front.jpg"]["image_size"] == [{"width": 640, "height": 480, "depth": 3}]
    assert sorted(map(tuple, (a.values() for a in by_image["front.jpg"]["annotations"]))) == [
        (0, 20, 10, 200, 100), (1, 500, 400, 120, 60)]
    assert sorted(map(tuple, (a.values() for a in by_image["back.jpg"]["annotations"]))) == [
        (0, 540, 295, 23, 18), (1, 0, 100.5, 640, 379.5)]


def test_yolo_fractions_scale_by_width_and_height_of_the_real_image(tmp_path):
    (tmp_path / "images").mkdir()
    image_file(tmp_path / "images", "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    dataset, problems = read("yolo", tmp_path)
    box = dataset.images[0].boxes[0]
    assert problems == [] and dataset.classes == ["cat", "dog"]
    assert (box.label, box.xmin, box.ymin, box.xmax, box.ymax) == ("dog", 240, 120, 400, 360)


def test_coco_voc_and_label_studio_conventions(tmp_path):
    image_file(tmp_path, "a.jpg")
    coco = {"images": [{"id": 7, "file_name": "a.jpg", "width": 640, "height": 480}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 90, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 90, "bbox": [540.0, 295.0, 23.0, 18.0],
                             "area": 414.0, "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 1}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>640</width><height>480</height><depth>3</depth></size>"
        "<object><name>dog</name><bndbox><xmin>540</xmin><ymin>295</ymin><xmax>563</xmax><ymax>313</ymax></bndbox>"
        "</object></annotation>")
    studio = [{"id": 1, "data": {"image": "/data/upload/1/3f2a9c1b-a.jpg"}, "annotations": [
        {"id": 10, "was_cancelled": True, "result": []},
        {"id": 11, "was_cancelled": False, "result": [
            {"type": "rectanglelabels", "original_width": 640, "original_height": 480,
             "value": {"x": 84.375, "y": 61.4583333, "width": 3.59375, "height": 3.75, "rotation": 0,
                       "rectanglelabels": ["dog"]}}]}], "predictions": []}]
    (tmp_path / "studio.json").write_text(json.dumps(studio))
    for format, path in (("coco", "coco.json"), ("voc", "a.xml"), ("labelstudio", "studio.json")):
        dataset, problems = read(format, tmp_path / path)
        assert problems == [], format
        [(label, *corners)] = boxes_by_image(dataset)[str(tmp_path / "a.jpg")]
        assert label == "dog" and np.allclose(corners, (540, 295, 563, 313)), format


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(DatasetError, match=r"unknown input format 'labelme'; valid formats: coco, .*yolo"):
        read("labelme", "x.json")
    with pytest.raises(DatasetError, match=r"unknown output format 'tfrecord'; valid formats: coco, recordio"):
        write("tfrecord", None, "x")


def test_class_map_inline_or_from_a_file(tmp_path):
    assert parse_class_map("2000 RUB,1000 RUB") == NAMES
    assert parse_class_map("1=1000 RUB,0=2000 RUB") == NAMES
    (tmp_path / "classes.json").write_text('{"0": "2000 RUB", "1": "1000 RUB"}')
    assert parse_class_map(str(tmp_path / "classes.json")) == NAMES
    with pytest.raises(DatasetError, match="without gaps"):
        parse_class_map("0=cat,2=dog")
