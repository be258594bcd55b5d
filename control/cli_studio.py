"""deeplens-ctl studio: the browser page for the whole round (control/studio, docs/studio.md)."""
import click

from .cli_common import reports_errors


@click.command()
@click.argument("project_dir", default=".", type=click.Path(file_okay=False))
@click.option("--port", type=int, default=8090, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the studio has no login, so keep it on this machine.")
@reports_errors
def studio(project_dir, port, host):
    """Open PROJECT_DIR (made if missing) in the studio at http://HOST:PORT/: watch devices,
    capture, label with model suggestions, train, deploy and roll back.

    The labels are PROJECT_DIR/labels.manifest, which `train` and `manifest validate` read too;
    every change is written at once. Stop with Ctrl+C.

    \b
    Examples:
      deeplens-ctl studio notes/
      deeplens-ctl studio notes/ --port 8091
    """
    from werkzeug.serving import make_server
    from .studio.app import create_app
    app = create_app(project_dir)
    server = make_server(host, port, app, threaded=True)
    click.echo(f"studio of {app.extensions['studio'].project.folder} at http://{host}:{server.port}/", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions["studio"].runs.stop_all()
        server.server_close()


COMMANDS = [studio]
