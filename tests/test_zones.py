"""Zones: which detections a named polygon holds, what a zone may be, and GET/PUT /zones (stored
before applied, kept across restarts, every bad body refused with 400 and nothing changed)."""
import json
import random

import pytest

from core.errors import InvalidInput, StorageError
from edge.counting import MAX_POINTS, MAX_ZONES, Zone, ZoneStore, parse_zones

TOKEN = "zones-token"
SQUARE = [[0.1, 0.1], [0.6, 0.1], [0.6, 0.9], [0.1, 0.9]]
TRAY = {"name": "tray", "points": SQUARE}


def zone(points, name="z"):
    return parse_zones([{"name": name, "points": points}])[0]


# -- geometry ------------------------------------------------------------------------------------
def test_a_centre_inside_a_convex_or_concave_polygon_is_in_the_zone():
    square = zone(SQUARE)
    assert square.contains(0.3, 0.5) and not square.contains(0.7, 0.5) and not square.contains(0.3, 0.95)
    ell = zone([[0, 0], [0.5, 0], [0.5, 0.5], [1, 0.5], [1, 1], [0, 1]])  # an L: the top right is outside
    assert ell.contains(0.25, 0.25) and ell.contains(0.75, 0.75) and not ell.contains(0.75, 0.25)


def test_a_point_on_an_edge_shared_by_two_zones_belongs_to_exactly_one():
    """Half-open edges: neighbours split their border, corners and all, and the same point always
    gets the same answer (a detection is never counted twice nor lost between two zones)."""
    left = zone([[0.2, 0.1], [0.5, 0.1], [0.5, 0.9], [0.2, 0.9]], "left")
    right = zone([[0.5, 0.1], [0.8, 0.1], [0.8, 0.9], [0.5, 0.9]], "right")
    upper = zone([[0.2, 0.1], [0.8, 0.1], [0.2, 0.9]], "upper")  # split along a diagonal, given both ways round
    lower = zone([[0.8, 0.9], [0.2, 0.9], [0.8, 0.1]], "lower")
    for k in range(101):
        y = 0.1 + 0.8 * k / 100
        assert left.contains(0.5, y) + right.contains(0.5, y) == (1 if y < 0.9 else 0), y
        x = 0.8 - 0.6 * k / 100
        y = 0.1 + 0.8 * k / 100
        assert upper.contains(x, y) + lower.contains(x, y) <= 1
    rng = random.Random(1)
    for _ in range(2000):  # inside the pair's square, off its outline: exactly one of each split
        x, y = rng.uniform(0.2001, 0.7999), rng.uniform(0.1001, 0.8999)
        assert left.contains(x, y) + right.contains(x, y) == 1
        assert upper.contains(x, y) + lower.contains(x, y) == 1, (x, y)
    assert left.contains(0.2, 0.5) and not right.contains(0.8, 0.5)  # left and top edges in, right and bottom out
    assert left.contains(0.3, 0.1) and not left.contains(0.3, 0.9)


# -- what a zone may be ------------------------------------------------------------------------------
def ok_points(n):
    import math
    return [[0.5 + 0.4 * math.cos(2 * math.pi * k / n), 0.5 + 0.4 * math.sin(2 * math.pi * k / n)] for k in range(n)]


BAD = [  # (body, code, field)
    ({"zones": [{"name": "a", "points": [[0, 0], [1, 0]]}]}, "invalid_zones", "zones[0].points"),
    ({"zones": [{"name": "a", "points": [[0, 0], [1.2, 0], [0, 1]]}]}, "invalid_zones", "zones[0].points[1]"),
    ({"zones": [{"name": "a", "points": [[-0.1, 0], [1, 0], [0, 1]]}]}, "invalid_zones", "zones[0].points[0]"),
    ({"zones": [{"name": "a", "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}]}, "self_intersecting_zone",
     "zones[0].points"),  # a bow tie
    ({"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1], [0.5, 0], [0, 1]]}]}, "self_intersecting_zone",
     "zones[0].points"),  # a corner touching another edge
    ({"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 0], [0, 1]]}]}, "self_intersecting_zone",
     "zones[0].points"),  # a point twice
    ({"zones": [{"name": "a", "points": [[0, 0], [0.5, 0.5], [1, 1]]}]}, "self_intersecting_zone",
     "zones[0].points"),  # no area
    ({"zones": [{"name": "a", "points": [[0, 0], [1, 0], [0.5, 0], [0.5, 1]]}]}, "self_intersecting_zone",
     "zones[0].points"),  # an edge folding back on the one before
    ({"zones": [TRAY, {"name": "tray", "points": ok_points(3)}]}, "duplicate_zone", "zones[1].name"),
    ({"zones": [{"name": "", "points": SQUARE}]}, "invalid_zones", "zones[0].name"),
    ({"zones": [{"name": "a b", "points": SQUARE}]}, "invalid_zones", "zones[0].name"),
    ({"zones": [{"name": "x" * 41, "points": SQUARE}]}, "invalid_zones", "zones[0].name"),
    ({"zones": [{"name": 5, "points": SQUARE}]}, "invalid_zones", "zones[0].name"),
    ({"zones": [{"points": SQUARE}]}, "invalid_zones", "zones[0].name"),
    ({"zones": [{"name": f"z{k}", "points": SQUARE} for k in range(MAX_ZONES + 1)]}, "too_many_zones", "zones"),
    ({"zones": [{"name": "a", "points": ok_points(MAX_POINTS + 1)}]}, "too_many_points", "zones[0].points"),
    ({"zones": [{"name": "a", "points": [[0, 0, 0], [1, 0], [0, 1]]}]}, "invalid_zones", "zones[0].points[0]"),
    ({"zones": [{"name": "a", "points": [[True, 0], [1, 0], [0, 1]]}]}, "invalid_zones", "zones[0].points[0]"),
    ({"zones": [{"name": "a", "points": [[0, "0"], [1, 0], [0, 1]]}]}, "invalid_zones", "zones[0].points[0]"),
    ({"zones": [{"name": "a", "points": "0,0 1,0 0,1"}]}, "invalid_zones", "zones[0].points"),
    ({"zones": [{"name": "a", "points": SQUARE, "colour": "red"}]}, "unknown_field", "zones[0].colour"),
    ({"zones": ["tray"]}, "invalid_zones", "zones[0]"),
    ({"zones": {"tray": SQUARE}}, "invalid_zones", "zones"),
    ({"zone": [TRAY]}, "unknown_field", "zone"),
    ({"zones_only": "yes"}, "invalid_zones", "zones_only"),
    ([TRAY], "invalid_zones", None),
]


@pytest.mark.parametrize("body, code, field", BAD)
def test_a_bad_zone_is_refused_naming_the_field_and_changes_nothing(tmp_path, body, code, field):
    store = ZoneStore(tmp_path, [{"name": "kept", "points": ok_points(4)}])
    before = store.to_json()
    with pytest.raises(InvalidInput) as caught:
        store.store(*store.parse(body))
    assert (caught.value.code, caught.value.field) == (code, field), caught.value.message
    assert store.to_json() == before and not (tmp_path / "zones.json").exists()


def test_a_coordinate_that_is_not_a_number_is_refused():
    with pytest.raises(InvalidInput, match="outside the frame"):
        zone([[float("nan"), 0], [1, 0], [0, 1]])
    assert len(zone(ok_points(MAX_POINTS)).points) == MAX_POINTS  # the limit itself is fine


# -- stored, then applied ----------------------------------------------------------------------
def test_the_settings_zones_hold_until_a_change_which_is_stored_and_reloaded(tmp_path):
    store = ZoneStore(tmp_path, [TRAY], zones_only=False)
    assert store.source == "settings" and [z.name for z in store.zones] == ["tray"]
    store.store(*store.parse({"zones_only": True}))  # a field left out keeps its value
    assert store.to_json() == {"zones": [TRAY], "zones_only": True}
    doc = store.store(*store.parse({"zones": [{"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}]}))
    assert doc == json.loads((tmp_path / "zones.json").read_text())
    again = ZoneStore(tmp_path, [TRAY], zones_only=False)
    assert again.to_json() == doc and again.source == "saved"
    store.store(*store.parse({"zones": []}))  # [] removes them all, and that is kept too
    assert ZoneStore(tmp_path, [TRAY]).zones == []


def test_a_corrupt_or_invalid_saved_file_is_ignored_for_the_settings(tmp_path):
    (tmp_path / "zones.json").write_text("{trunc")
    assert [z.name for z in ZoneStore(tmp_path, [TRAY]).zones] == ["tray"]
    (tmp_path / "zones.json").write_text(json.dumps({"zones": [{"name": "a", "points": [[0, 0], [1, 1]]}]}))
    assert [z.name for z in ZoneStore(tmp_path, [TRAY]).zones] == ["tray"]
    (tmp_path / ".zones.json.abc.tmp").write_text("{")
    ZoneStore(tmp_path, [])
    assert not (tmp_path / ".zones.json.abc.tmp").exists()


def test_zones_that_cannot_be_stored_are_not_applied(tmp_path):
    store = ZoneStore(tmp_path / "state", [TRAY])
    (tmp_path / "state").write_text("a file where the state folder should be")
    with pytest.raises(StorageError, match="could not be stored, so they were not changed"):
        store.store(*store.parse({"zones": [], "zones_only": True}))
    assert store.to_json() == {"zones": [TRAY], "zones_only": False}


def test_zone_json_round_trips():
    assert Zone("tray", [(0.1, 0.1), (0.6, 0.1), (0.6, 0.9)]).to_json() == {
        "name": "tray", "points": [[0.1, 0.1], [0.6, 0.1], [0.6, 0.9]]}


# -- GET/PUT /zones on a real service ------------------------------------------------------------
@pytest.fixture
def service(edge_service, tmp_path):
    """No model (capture-only) and no broker: zones need neither, and the service starts quicker."""
    def start():
        return edge_service("--frame-size", "640x360", "--broker", "none", "--artifacts", str(tmp_path / "artifacts"),
                            "--token", TOKEN)
    return start


def test_put_zones_needs_the_token_and_is_kept_across_a_restart(service, tmp_path):
    svc = service()
    assert svc.get("/zones").json() == {"zones": [], "zones_only": False}
    anonymous = svc.session.put(svc.url + "/zones", json={"zones": [TRAY]}, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    body = {"zones": [TRAY, {"name": "drawer-2", "points": [[0.6, 0.1], [0.9, 0.1], [0.9, 0.9], [0.6, 0.9]]}],
            "zones_only": True}
    answer = svc.put("/zones", json=body)
    assert answer.status_code == 200 and answer.json() == body
    assert svc.get("/zones").json() == body
    assert svc.get("/status").json()["counts"]["zones"] == ["tray", "drawer-2"]
    svc.stop()
    again = service()
    assert again.get("/zones").json() == body
    counts = again.get("/counts").json()
    assert counts["model_version"] is None and counts["raw"] is None  # capture-only: nothing counted


def test_every_bad_zone_body_is_refused_with_400_and_changes_nothing(service, tmp_path):
    svc = service()
    assert svc.put("/zones", json={"zones": [TRAY]}).status_code == 200
    saved = (tmp_path / "state" / "zones.json").read_text()
    for body, code, field in BAD:
        answer = svc.put("/zones", json=body)
        assert answer.status_code == 400, (body, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error.get("field")) == (code, field), error
        assert svc.get("/zones").json() == {"zones": [TRAY], "zones_only": False}
        assert (tmp_path / "state" / "zones.json").read_text() == saved
    for raw, code in ((b"{not json", "json_malformed"), (b"[" * 50 + b"]" * 50, "json_too_deep")):
        answer = svc.put("/zones", data=raw, headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, code)
    assert svc.get("/zones").json() == {"zones": [TRAY], "zones_only": False}
