"""`deeplens-edge`: the device service's command line.

Options are generated from edge.config.SETTINGS, so every setting is a flag, a DEEPLENS_*
variable and a config-file key with one help text.
"""
import atexit
import logging
import os
import sys

import click

from . import config as config_mod
from .errors import ConfigError
from .logs import setup_logging


def _setting_options(func):
    """Add one --flag per setting (flags win over env, env over file, file over defaults)."""
    for setting in reversed(config_mod.SETTINGS):
        flag = "--" + setting.key.replace("_", "-")
        default_text = f" [default: {setting.default}]" if setting.default not in ("", None, {}, []) else ""
        if setting.kind is bool:
            func = click.option(f"{flag}/--no-{setting.key.replace('_', '-')}", setting.key, default=None,
                                help=setting.help + default_text)(func)
        elif setting.kind in (dict, list):  # text on the command line; edge.config parses it
            func = click.option(flag, setting.key, type=str, default=None,
                                metavar="NAME=VALUE,..." if setting.kind is dict else "JSON",
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


DEMO_HELP = {  # where serve's help text names serve's defaults
    "artifacts": "Model folder; the shipped demo model is copied there when it holds none.",
    "state_dir": "Where settings changed at run time, and the demo's model-store token, are kept.",
}


def _demo_setting_options(func):
    """serve's options, with the demo's own defaults (edge.demo.DEFAULTS) in their help."""
    from .demo import DEFAULTS
    func = _setting_options(func)
    for option in func.__click_params__:
        if option.name in DEFAULTS:
            text = DEMO_HELP.get(option.name) or config_mod.BY_KEY[option.name].help
            option.help = f"{text} [default: {DEFAULTS[option.name]}]"
    return func


@main.command()
@_demo_setting_options
def demo(config_file, **flags):
    """Zero-setup demo: `serve` on the synthetic camera, an embedded broker and a model that knows its notes.

    Defaults differ from `serve` only where a demo needs it: models in ./demo-artifacts (the
    shipped demo model, trained on the synthetic camera's notes, is copied there if none is
    there), state in ./demo-state, a lower threshold, two events a second at most, and a token
    for the model store kept there, printed with the live-view URL and the commands to try.

    \b
    Examples:
      deeplens-edge demo
      deeplens-edge demo --port 8081 --frame-size 1280x720
      deeplens-edge demo --broker none --threshold 0.5
    """
    from .demo import DEFAULTS, prepare_demo
    from .runtime import serve_forever
    try:
        base = config_mod.load(env={}, overrides=DEFAULTS)
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
    code = run(lambda_file, config, handler=handler)
    # The Lambda's own thread may still be inside MXNet: an interpreter teardown racing it ends in a
    # C++ abort ("terminate called without an active exception"). Run the exit handlers (the
    # greengrasssdk flush, the broker), then leave without the teardown.
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True,
              help="Address the service listens on (REST and MQTT); 0.0.0.0: every network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="HTTPS port.")
@click.option("--camera", default="webcam:0", show_default=True, help="Camera spec (see `serve --help`).")
@click.option("--user", default="deeplens", show_default=True, help="System user the service runs as (made if missing).")
@click.option("--root", type=click.Path(file_okay=False), default="/", show_default=True,
              help="Install under this folder instead of / (for trying it out and for tests).")
@click.option("--from", "source", type=click.Path(exists=True),
              help="deeplens-kit to install: a project folder or a wheel (default: the checkout this runs from).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Your certificate (PEM) instead of a "
              "self-signed one.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The key of --tls-cert.")
@click.option("--python", type=click.Path(exists=True, dir_okay=False),
              help="Python 3.9 to 3.11 for the environment (default: the one running this command).")
@click.option("--uninstall", is_flag=True, help="Remove what install made; the models and state stay.")
@click.option("--purge", is_flag=True, help="With --uninstall: remove the models, state and the user it made too.")
def install(host, port, camera, user, root, source, tls_cert, tls_key, python, uninstall, purge):
    """Install the service on this device (as root): its own environment, a system user, settings,
    a token, broker credentials, a certificate for HTTPS, and the systemd unit. Run it again to
    upgrade in place: settings, token, certificate and models are kept.

    \b
    Examples:
      sudo deeplens-edge install --camera webcam:0
      sudo deeplens-edge install --host 192.168.1.20 --port 8443 --tls-cert cert.pem --tls-key key.pem
      sudo deeplens-edge install --uninstall            # keeps the models (--purge removes them)
    """
    from .install import install as do_install, uninstall as do_uninstall
    from core.errors import DeepLensError
    echo = lambda line: click.echo(line, err=True)  # noqa: E731 - progress on stderr, the result on stdout
    try:
        if uninstall:
            do_uninstall(root, purge=purge, echo=echo)
            return
        if purge:
            raise click.UsageError("--purge goes with --uninstall")
        if bool(tls_cert) != bool(tls_key):
            raise click.UsageError("give --tls-cert and --tls-key together")
        done = do_install(root, host=host, port=port, camera=camera, user=user, source=source,
                          tls_cert=tls_cert, tls_key=tls_key, python=python, echo=echo)
    except DeepLensError as exc:
        raise click.ClickException(str(exc)) from None
    shown_host = done["url"].split("//", 1)[1].rsplit(":", 1)[0]
    address = shown_host if shown_host not in ("0.0.0.0", "::") else "THIS-DEVICE"
    click.echo(f"deeplens-edge is installed: {done['url']}")
    click.echo(f"  certificate fingerprint  {done['fingerprint']}")
    if done["token"]:
        click.echo(f"  token                    {done['token']}   (shown once; kept in {done['token_file']})")
    else:
        click.echo(f"  token                    kept in {done['token_file']}")
    click.echo("On your laptop:")
    click.echo(f"  deeplens-ctl devices add NAME https://{address}:{done['url'].rsplit(':', 1)[1]} "
               f"--token TOKEN --fingerprint {done['fingerprint']}")


if __name__ == "__main__":
    main()
