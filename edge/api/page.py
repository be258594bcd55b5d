"""GET / and /static/<name>: the device's own web page (edge/page/), for a device without the
laptop studio. Plain files, nothing fetched from the internet; the page reads and changes the
device through the same REST API, with the token the person types. Both routes answer without
the token even when reads need it (edge/app.py PUBLIC): the page holds no data and must load
to ask for the token."""
from importlib import resources

from flask import Blueprint, Response

from core.errors import NotFound

blueprint = Blueprint("page", __name__)
ASSETS = {"index.html": "text/html", "page.js": "text/javascript", "page.css": "text/css"}
# The page's own files only, no inline script: device data shown on it cannot run as code.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'"}


def _asset(name):
    if name not in ASSETS:
        raise NotFound(f"no page file {name!r}; the page is at /", "not_found")
    data = (resources.files("edge") / "page" / name).read_bytes()
    return Response(data, mimetype=ASSETS[name], headers=HEADERS)


@blueprint.get("/")
def index():
    return _asset("index.html")


@blueprint.get("/static/<name>")
def asset(name):
    return _asset(name)
