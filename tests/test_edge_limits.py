"""Every input is bounded and checked before work, and a client's mistake is a 4xx that names no
internal path: bodies, archive members, class names."""
import io
import tarfile
import time

import pytest
import requests

from test_models_api import start_service, tgz, upload


@pytest.fixture(scope="module")
def service(tmp_path_factory, packages):
    svc = start_service(tmp_path_factory.mktemp("limits"), "--model", str(packages["a"].folder))
    yield svc
    svc.stop()


def test_a_large_body_is_refused_before_it_is_read(service):
    started = time.monotonic()
    refused = service.put("/threshold", data=b"{" * (1 << 20), headers={"Content-Type": "application/json"})
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "body_too_large"
    on_a_read = service.get("/status", data=b"x" * (8 << 20))
    assert on_a_read.status_code == 413
    assert time.monotonic() - started < 5


def test_an_archive_member_with_a_huge_name_is_a_client_error_naming_no_path(service, packages):
    info = tarfile.TarInfo("n" * 5000)
    info.size = 1
    response = upload(service, tgz(packages["b"], extra=[(info, b"x")]))
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_archive"
    assert "/" not in response.json()["error"]["message"]


def test_an_archive_of_many_members_is_refused_quickly(service):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i in range(20000):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    started = time.monotonic()
    response = upload(service, buffer.getvalue())
    assert response.status_code == 400 and "more than 64 files" in response.json()["error"]["message"]
    assert time.monotonic() - started < 5


def test_per_class_thresholds_name_only_the_models_classes(service, packages):
    classes = packages["a"].classes
    refused = service.put("/threshold", json={"per_class": {"1000": 0.7}})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_class"
    assert ", ".join(classes) in refused.json()["error"]["message"]
    assert service.put("/threshold", json={"per_class": {classes[0]: 0.7}}).status_code == 200
    assert requests.get(service.url + "/threshold", timeout=5).json()["per_class"] == {classes[0]: 0.7}



def test_a_deeply_nested_body_is_a_400_not_a_crash(service):
    for body in (b"[" * 1000 + b"]" * 1000, b"[" * 60000):
        response = service.put("/threshold", data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "json_too_deep"
    assert service.get("/health").status_code == 200
