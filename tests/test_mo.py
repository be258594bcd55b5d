"""mo.optimize: checks an MXNet checkpoint in the artifacts folder and writes `<name>.xml`;
failures are a non-zero status and a logged message naming the file, never an exception."""
import logging
import shutil

import pytest

import mo
from core.errors import ModelError


@pytest.fixture
def deployed(artifacts, dummy_model):
    """The dummy model's checkpoint copied into the artifacts folder, as a deployment leaves it."""
    for path in (dummy_model.symbol_path, dummy_model.params_path):
        shutil.copy(path, artifacts / path.name)
    return artifacts


def test_optimize_writes_a_descriptor_of_the_checkpoint(deployed):
    status, path = mo.optimize("dummy", 300, 300)
    assert (status, path) == (0, str(deployed / "dummy.xml"))
    symbol, params, width, height = mo.read_descriptor(path)
    assert (symbol, params, width, height) == (deployed / "dummy-symbol.json", deployed / "dummy-0000.params", 300, 300)


def test_optimize_selects_the_params_epoch(deployed):
    (deployed / "dummy-0000.params").rename(deployed / "dummy-0012.params")
    assert mo.optimize("dummy", 300, 300, "MXNet", {"--epoch": 12})[0] == 0
    assert mo.read_descriptor(deployed / "dummy.xml")[1].name == "dummy-0012.params"


def test_a_missing_model_is_status_1_naming_the_file(artifacts, caplog):
    with caplog.at_level(logging.ERROR, logger="mo"):
        assert mo.optimize("absent", 300, 300) == (1, "")
    assert str(artifacts / "absent-symbol.json") in caplog.text


def test_a_missing_epoch_names_its_params_file(deployed, caplog):
    assert mo.optimize("dummy", 300, 300, aux_inputs={"--epoch": 3}) == (1, "")
    assert "dummy-0003.params" in caplog.text


def test_broken_params_are_status_1_naming_the_file(deployed, caplog):
    (deployed / "dummy-0000.params").write_bytes(b"not an ndarray file")
    assert mo.optimize("dummy", 300, 300) == (1, "")
    assert "dummy-0000.params" in caplog.text
    assert not (deployed / "dummy.xml").exists()


def test_a_broken_symbol_is_status_1_naming_the_file(deployed, caplog):
    (deployed / "dummy-symbol.json").write_text("{ not json")
    assert mo.optimize("dummy", 300, 300) == (1, "")
    assert "dummy-symbol.json" in caplog.text


@pytest.mark.parametrize("width, height", [(1025, 300), (300, 2048), (0, 300), (300.0, 300)])
def test_input_sizes_beyond_the_device_limit_are_refused(deployed, width, height, caplog):
    assert mo.optimize("dummy", width, height) == (1, "")
    assert "1..1024" in caplog.text


def test_other_frameworks_are_refused(deployed, caplog):
    assert mo.optimize("dummy", 300, 300, platform="TensorFlow") == (1, "")
    assert "MXNet" in caplog.text


def test_a_foreign_xml_is_not_taken_for_a_descriptor(tmp_path):
    ir = tmp_path / "model.xml"
    ir.write_text('<?xml version="1.0"?><net name="ssd" version="10"><layers/></net>')
    with pytest.raises(ModelError, match="mo.optimize"):
        mo.read_descriptor(ir)
