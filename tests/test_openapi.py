"""edge/api/openapi.json: one entry per route the app serves, served at GET /openapi.json, valid OpenAPI 3."""
import json
import re
from pathlib import Path

import pytest

from edge.app import create_app

DOCUMENT = Path(__file__).resolve().parent.parent / "edge" / "api" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def app():
    # Listing routes and serving the document need no runtime: a placeholder stands in for it.
    return create_app(runtime=object())


@pytest.fixture(scope="module")
def document():
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def flask_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def documented_routes(document):
    return {(path, method) for path, item in document["paths"].items() for method in item if method in METHODS}


def test_document_lists_exactly_the_registered_routes(app, document):
    registered, documented = flask_routes(app), documented_routes(document)
    assert registered - documented == set(), "routes missing from openapi.json"
    assert documented - registered == set(), "openapi.json documents routes the app does not serve"


def test_served_at_openapi_json(app, document):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == document


def test_valid_openapi_3(document):
    validator = pytest.importorskip("openapi_spec_validator")  # in the `test` extras
    validator.validate(document)


def test_structure(document):
    """What a reader of the document relies on, checked even without openapi-spec-validator."""
    assert document["openapi"] == "3.0.3"
    assert document["info"]["title"] and document["info"]["version"]
    for path, method in documented_routes(document):
        operation = document["paths"][path][method]
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{([^}]+)}", path)), f"{method.upper()} {path}: path parameters"
        assert operation["operationId"] and operation["responses"], f"{method.upper()} {path}"


def test_token_protected_routes_need_bearer_auth(document):
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        **document["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    protected = {("/models", "post"), ("/models/{version}/activate", "post"), ("/models/rollback", "post"),
                 ("/models/{version}", "delete"), ("/threshold", "put"), ("/mqtt", "get"), ("/zones", "put"),
                 ("/keep", "post"), ("/keep/{name}", "delete")}
    for path, method in documented_routes(document):
        operation = document["paths"][path][method]
        needs_token = operation.get("security") == [{"bearerAuth": []}]
        assert needs_token == ((path, method) in protected), f"{method.upper()} {path}"
        if needs_token:
            assert {"401", "403"} <= set(operation["responses"]), f"{method.upper()} {path}"


def test_every_operation_has_responses_and_errors_share_one_shape(document):
    error = {"$ref": "#/components/schemas/Error"}
    responses = document["components"]["responses"]
    for path, method in documented_routes(document):
        operation = document["paths"][path][method]
        assert any(code.startswith("2") for code in operation["responses"]), f"{method.upper()} {path}"
        for code, response in operation["responses"].items():
            if code[0] in "45":
                response = responses[response["$ref"].rsplit("/", 1)[1]] if "$ref" in response else response
                assert response["content"]["application/json"]["schema"] == error, f"{method.upper()} {path} {code}"
