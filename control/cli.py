"""`deeplens-ctl`: the controller's command line, a thin layer over the control package.

Each group of verbs lives in its own module and is registered here:
- control.cli_dataset: pull, labels, manifest
- control.cli_train: train, evaluate, predict, import-sagemaker, model
- control.cli_device: swap-model, models, rollback, status, watch, threshold, capture, devices
- control.cli_studio: studio
Progress goes to stderr, results to stdout; user mistakes raise click.ClickException.
"""
import logging

import click

from . import cli_dataset, cli_device, cli_studio, cli_train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose):
    """Collect frames, label, train and hot-swap detectors on DeepLens-style devices.

    \b
    A typical round, in the browser:
      deeplens-ctl studio notes/       (then open http://127.0.0.1:8090/)

    \b
    The same round on the command line:
      deeplens-ctl pull http://camera:8080 -n 200 -o frames/
      deeplens-ctl labels import --format labelbox export.json -o data.manifest
      deeplens-ctl manifest split data.manifest -o split/
      deeplens-ctl train split/train.manifest --val split/val.manifest
      deeplens-ctl swap-model http://camera:8080 runs/exp/ --wait 60
    """
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")


for module in (cli_dataset, cli_train, cli_device, cli_studio):
    for command in module.COMMANDS:
        main.add_command(command)
