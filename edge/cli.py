"""`deeplens-edge`: the device service's command line.

Options are generated from edge.config.SETTINGS, so every setting is a flag, a DEEPLENS_*
variable and a config-file key with one help text.
"""
import sys

import click

from . import config as config_mod
from .errors import ConfigError
from .logs import setup_logging


def _setting_options(func):
    """Add one --flag per setting (flags win over env, env over file, file over defaults)."""
    for setting in reversed(config_mod.SETTINGS):
        flag = "--" + setting.key.replace("_", "-")
        default_text = f" [default: {setting.default}]" if setting.default not in ("", None) else ""
        if setting.kind is bool:
            func = click.option(f"{flag}/--no-{setting.key.replace('_', '-')}", setting.key, default=None,
                                help=setting.help + default_text)(func)
        else:
            func = click.option(flag, setting.key, type=setting.kind, default=None, metavar=setting.kind.__name__.upper(),
                                help=setting.help + default_text)(func)
    return click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
                        envvar="DEEPLENS_CONFIG", help="YAML file of settings (keys as the long options, with _).")(func)


def load_config(config_file, flags):
    try:
        return config_mod.load(config_file, overrides=flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main():
    """The deeplens-kit service on the device: camera, detector, REST API and MQTT events.

    \b
    On a DeepLens or any Linux box with a camera:
      deeplens-edge serve --camera webcam:0 --broker embedded
      curl localhost:8080/capture -o frame.jpg
      mosquitto_sub -t 'deeplens/+/detections'
    """


@main.command()
@_setting_options
def serve(config_file, **flags):
    """Run the service: inference loop, REST API and MQTT publisher, until stopped.

    \b
    Examples:
      deeplens-edge serve --camera webcam:0
      deeplens-edge serve -c /etc/deeplens-edge/edge.yaml
      deeplens-edge serve --camera url:http://cam/mjpeg --broker mqtt.local:1883 --crop stretch
      DEEPLENS_TOKEN=... deeplens-edge serve --host 0.0.0.0 --port 8080
    """
    from .runtime import serve_forever
    config = load_config(config_file, flags)
    setup_logging(config.log_level)
    sys.exit(serve_forever(config))


@main.command()
@_setting_options
def demo(config_file, **flags):
    """Zero-setup demo: `serve` on a synthetic camera, an embedded broker and a random-weight model.

    Defaults differ from `serve` only where a demo needs it: models in ./demo-artifacts (a
    random-weight one is made if none is there), state in ./demo-state, and a token for the
    model store kept there, printed with the live-view URL and the MQTT topic to watch.

    \b
    Examples:
      deeplens-edge demo
      deeplens-edge demo --port 8081 --frame-size 1280x720
    """
    from .runtime import prepare_demo, serve_forever
    try:
        base = config_mod.load(env={}, overrides={"artifacts": "demo-artifacts", "state_dir": "demo-state",
                                                   "threshold": 0.5})
        config = config_mod.load(config_file, overrides=flags, base=base)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(config.log_level)
    sys.exit(serve_forever(prepare_demo(config), announce=True))


@main.command("run-lambda")
@click.argument("lambda_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--handler", default=None, help="Handler to call if importing the file returns "
              "(default: function_handler or lambda_handler, if defined).")
@_setting_options
def run_lambda(lambda_file, handler, config_file, **flags):
    """Run an unmodified DeepLens inference Lambda under the shims.

    awscam reads the configured camera, mo.optimize the artifacts folder, and
    greengrasssdk publishes to the configured (or embedded) MQTT broker. The thing name
    comes from AWS_IOT_THING_NAME (or --thing-name).

    \b
    Examples:
      deeplens-edge run-lambda lambda_function.py --camera webcam:0
      AWS_IOT_THING_NAME=deeplens_kitchen deeplens-edge run-lambda inference.py --broker localhost:1883
    """
    from .lambda_runner import run_lambda as run
    config = load_config(config_file, flags)
    setup_logging(config.log_level)
    sys.exit(run(lambda_file, config, handler=handler))


if __name__ == "__main__":
    main()
