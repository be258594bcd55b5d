"""The conventions every deeplens-ctl verb shares (docs/cli.md), in one place.

- Results go to stdout, as text or with `--json` as JSON; progress goes to stderr.
- A user's mistake or a device's refusal (any core.errors.DeepLensError, or a file that cannot
  be read or written) is one sentence and exit status 1, never a traceback; click's usage
  errors exit 2.
- A DEVICE argument is a URL, host:port or devices.yaml name, turned into a DeviceClient.
- Every verb's --help ends with examples.
"""
import contextlib
import functools
import inspect
import json
import sys

import click

from core.client import DeviceClient
from core.errors import DeepLensError

DEVICE_HELP = ("DEVICE is a URL (http://camera:8080), a host:port (camera:8080) or a name from "
               "~/.config/deeplens-kit/devices.yaml (or the file DEEPLENS_DEVICES names).")

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@contextlib.contextmanager
def user_errors():
    """Turn the project's errors and file errors into one-sentence ClickExceptions."""
    try:
        yield
    except DeepLensError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None


def reports_errors(func):
    """Decorator form of user_errors for a whole verb."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with user_errors():
            return func(*args, **kwargs)
    return wrapper


def device_argument(func):
    """A DEVICE argument handed to the verb as a DeviceClient, and DEVICE_HELP in its --help."""
    @click.argument("device")
    @functools.wraps(func)
    def wrapper(device, **kwargs):
        with user_errors():
            return func(DeviceClient(device), **kwargs)
    wrapper.__doc__ = inspect.cleandoc(func.__doc__) + "\n\n" + DEVICE_HELP
    return wrapper


def echo_json(doc, indent=None):
    click.echo(json.dumps(doc, indent=indent, default=str))


def progress(label):
    """A wrapper that shows a progress bar on stderr while iterating a list."""
    def wrap(items):
        with click.progressbar(items, label=label, file=sys.stderr) as bar:
            yield from bar
    return wrap


def names(text):
    """'a, b,c' -> ['a', 'b', 'c']; None for no text."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else None
