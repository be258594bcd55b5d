"""The studio's Flask app: one page (static/, plain JavaScript modules) over the JSON API (api.py)."""
import dataclasses
import threading
from pathlib import Path

from flask import Flask, send_from_directory

from core.httperrors import install

from . import api
from .devices import Devices
from .jobs import Jobs
from .project import Project
from .suggest import Suggestions
from .training import Runs

STATIC = Path(__file__).resolve().parent / "static"


@dataclasses.dataclass
class Studio:
    """What the routes work on: one project, its devices, runs, suggestions and background jobs."""
    project: Project
    devices: Devices
    runs: Runs
    suggestions: Suggestions
    jobs: Jobs

    @classmethod
    def open(cls, folder):
        project = Project(folder)
        devices, runs = Devices(project), Runs(project)
        threading.Thread(target=project.make_thumbnails, name="thumbnails", daemon=True).start()
        return cls(project, devices, runs, Suggestions(project, devices, runs), Jobs())


def create_app(project_dir):
    studio = Studio.open(project_dir)
    app = Flask("studio", static_folder=None)
    app.extensions["studio"] = studio
    app.register_blueprint(api.blueprint)
    install(app, "the studio failed on this request; its console says why")

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html", max_age=0)

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(STATIC, name, max_age=0)

    return app
