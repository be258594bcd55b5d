"""The model package contract (docs/model-package.md): what train writes and every loader checks."""
import json
import shutil

import pytest

from core.errors import ModelError
from core.package import load_package, write_package


@pytest.fixture
def package(dummy_model, tmp_path):
    folder = tmp_path / "pkg"
    shutil.copytree(dummy_model.folder, folder)
    return folder


def test_package_names_its_version_after_its_content(package, dummy_model):
    pkg = load_package(package)
    assert pkg.version == dummy_model.version and len(pkg.version) == 12
    assert (pkg.width, pkg.height, pkg.classes) == (300, 300, ["class0", "class1"])
    assert set(pkg.files) == {"dummy-symbol.json", "dummy-0000.params"}


def test_changed_params_change_the_version(package):
    before = load_package(package).version
    params = package / "dummy-0000.params"
    data = bytearray(params.read_bytes())
    data[-1] ^= 0xFF
    params.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="dummy-0000.params: SHA-256 does not match"):
        load_package(package)
    assert write_package(package, "dummy", ["a", "b"], 300, 300).version != before


def test_missing_file_is_named(package):
    (package / "dummy-symbol.json").unlink()
    with pytest.raises(ModelError, match="dummy-symbol.json: listed in model.json 'files' but missing"):
        load_package(package)


def test_bad_field_is_named(package):
    meta = json.loads((package / "model.json").read_text())
    meta["input"]["width"] = "300"
    (package / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="field 'input.width' must be a int"):
        load_package(package)


def test_not_a_package(tmp_path):
    with pytest.raises(ModelError, match="model.json: missing"):
        load_package(tmp_path)
