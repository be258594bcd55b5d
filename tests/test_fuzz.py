"""Property-based fuzzing of the running service from its own /openapi.json (schemathesis): over
2,000 generated requests, valid and not, with the token so that changes are exercised too. No
answer is a 5xx, none takes over 5 s, /health answers throughout, and the service's memory
grows by less than 50 MB. (/stream never ends by design: tests/test_live_view.py covers it.)"""
import collections
import time

import psutil
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from edge.api import openapi
from test_models_api import TOKEN, start_service

EXAMPLES = 300  # per operation and phase; about 2,500 requests in all
SLOW_S = 5.0
seen = collections.Counter()
slow = []
state = {}


@pytest.fixture(scope="module")
def service(tmp_path_factory, packages):
    svc = start_service(tmp_path_factory.mktemp("fuzz"), "--model", str(packages["a"].folder),
                        "--capture-deadline", "1")
    svc.wait_status(lambda doc: doc["frames_processed"] > 10)
    for path in ("/capture", "/status", "/models", "/frame.jpg", "/metrics"):  # first calls allocate
        svc.get(path)
    state["rss_before"] = psutil.Process(svc.proc.pid).memory_info().rss
    yield svc
    svc.stop()


@schemathesis.serializer("application/gzip")
def as_archive_bytes(ctx, value):
    """Upload bodies: whatever was generated, as bytes (the store must refuse junk with a 4xx)."""
    return value if isinstance(value, bytes) else str(value).encode()


# The document the service serves at /openapi.json (tests/test_openapi.py checks they are one).
schema = schemathesis.openapi.from_dict(openapi.document()).exclude(path="/stream")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_request_breaks_or_stalls_the_service(case, service):
    started = time.monotonic()
    response = case.call(base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    elapsed = time.monotonic() - started
    seen[response.status_code] += 1
    if elapsed > SLOW_S:
        slow.append(f"{case.method} {case.formatted_path} {case.query} {elapsed:.1f} s")
    assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.query}: {response.text[:300]}"
    assert requests.get(service.url + "/health", timeout=2).status_code == 200


def test_the_fuzz_ran_enough_requests_quickly_and_memory_stayed_flat(service):
    """Runs after the fuzz above (pytest keeps file order); prints the count by status code."""
    print("fuzzed requests by status code:", dict(sorted(seen.items())))
    assert sum(seen.values()) >= 2000
    assert not slow, slow
    growth = psutil.Process(service.proc.pid).memory_info().rss - state["rss_before"]
    assert growth < 50 << 20, f"RSS grew by {growth >> 20} MB"
