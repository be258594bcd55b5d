"""deeplens-ctl verbs of this group (see control/cli.py): train, evaluate, predict,
import-sagemaker, model dummy, model quantize. Thin: parse, call control.train, print (conventions:
control.cli_common). MXNet is imported inside the verbs so that `--help` and the other groups
do not pay for it."""
import sys
from pathlib import Path

import click

from core.crop import CROPS, DEFAULT_CROP

from .cli_common import echo_json, json_option, names, reports_errors
from .train.config import FLIPS, TrainConfig

D = TrainConfig()
crop_option = click.option(
    "--crop", type=click.Choice(CROPS), default=DEFAULT_CROP, show_default=True,
    help="How frames of another aspect ratio meet the model's input: 'center' crops the centred region "
         "(what the device does by default), 'stretch' resizes the whole frame (the device's crop: stretch).")


@click.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--val", "val_manifest", type=click.Path(exists=True, dir_okay=False),
              help="Validation manifest (split it group-aware: `manifest split`). Default: the training set.")
@click.option("--name", default=D.name, show_default=True, help="Run folder runs/<name>/ and the package name.")
@click.option("--arch", default=D.arch, show_default=True, help="mobilenet (fast default), resnet (larger), tiny.")
@click.option("--size", type=int, default=D.size, show_default=True, help="Input width and height.")
@click.option("--epochs", type=int, default=D.epochs, show_default=True)
@click.option("--batch-size", type=int, default=D.batch_size, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=D.optimizer, show_default=True)
@click.option("--lr", type=float, default=D.lr, show_default=True, help="Peak learning rate (warm-up, then cosine).")
@click.option("--time-budget", type=float, default=D.time_budget, show_default=True,
              help="Minutes of training at most (0: none); the schedule fits itself into it.")
@click.option("--patience", type=int, default=D.patience, show_default=True,
              help="Stop after this many epochs without a better validation mAP (0: never).")
@click.option("--seed", type=int, default=D.seed, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=D.workers, show_default=True,
              help="Processes that augment the next batches while the network trains (0: none, all in one).")
@click.option("--flip", type=click.Choice(list(FLIPS)), default=D.flip, show_default=True,
              help="; ".join(f"{k}: {v}" for k, v in FLIPS.items()))
@click.option("--threshold", type=float, default=D.threshold, show_default=True,
              help="Deployed score threshold that validation reports precision/recall at.")
@crop_option
@click.option("--class-names", help="Class names in class_id order, comma-separated (default: the manifest's).")
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", show_default=True)
@click.option("--resume", is_flag=True, help="Continue runs/<name>/ from its last completed epoch.")
@click.option("--init", type=click.Path(exists=True, file_okay=False),
              help="Start from the weights of a run folder (runs/<name>/) or model package instead of random "
                   "ones: same --arch and --size, same classes or more (matched by name).")
@click.option("--int8", is_flag=True,
              help="Also export the int8 variant runs/<name>/model-int8/, calibrated on training frames "
                   "(see `model quantize`).")
@click.option("--backend", type=click.Choice(["local", "sagemaker"]), default="local", show_default=True)
@click.option("--role", help="[sagemaker] IAM role ARN the training job runs as.")
@click.option("--bucket", help="[sagemaker] S3 bucket for data and output.")
@click.option("--prefix", default="deeplens-kit", show_default=True, help="[sagemaker] S3 key prefix.")
@click.option("--region", help="[sagemaker] AWS region (default: the AWS configuration's).")
@click.option("--instance-type", default="ml.p3.2xlarge", show_default=True, help="[sagemaker] training instance.")
@click.option("--job-name", help="[sagemaker] training job name (default: deeplens-<time>).")
@click.option("--hp", "hyperparameters", multiple=True, metavar="KEY=VALUE",
              help="[sagemaker] algorithm hyperparameter (repeatable); unset ones keep the algorithm's defaults.")
@json_option
@reports_errors
def train(manifest, val_manifest, class_names, runs_dir, resume, int8, backend, role, bucket, prefix, region,
          instance_type, job_name, hyperparameters, as_json, **options):
    """Train an SSD detector on MANIFEST and export it as a deployable package.

    \b
    Local (default): runs/<name>/ gets args.yaml, metrics.csv, weights/{best,last}.params,
    plots, the package model/ and model.tar.gz (SageMaker layout). SIGTERM, Ctrl-C or a
    file runs/<name>/STOP ends the run after the current epoch, which still exports the best
    weights; a second SIGTERM or Ctrl-C aborts.
    --backend sagemaker: uploads images and manifests, runs the built-in object-detection
    algorithm, downloads its model.tar.gz and converts it into the package runs/<name>/model/.

    \b
    Examples:
      deeplens-ctl train split/train.manifest --val split/val.manifest --name notes
      deeplens-ctl train data.manifest --val val.manifest --flip rot90 --time-budget 15 --int8
      deeplens-ctl train data.manifest --name notes --resume
      deeplens-ctl train relabelled.manifest --name notes2 --init runs/notes/ --epochs 30
      deeplens-ctl train data.manifest --backend sagemaker --role ARN --bucket my-bucket
    """
    config = TrainConfig(**options, classes=names(class_names))
    if backend == "sagemaker":
        from .train import sagemaker
        if not (role and bucket):
            raise click.UsageError("--backend sagemaker needs --role and --bucket")
        for option, given in (("--init", config.init), ("--int8", int8)):
            if given:
                raise click.UsageError(f"{option} works with --backend local only")
        hp = dict(h.split("=", 1) for h in hyperparameters if "=" in h)
        package = sagemaker.train_job(manifest, val_manifest, Path(runs_dir) / config.name, role=role, bucket=bucket,
                                      prefix=prefix, region=region, instance_type=instance_type, hyperparameters=hp,
                                      size=config.size, class_names=config.classes, job_name=job_name,
                                      echo=lambda line: click.echo(line, err=True))
        result = {"package": str(package.folder), "version": package.version}
    else:
        from .train.callbacks import stop_on_signals
        from .train.trainer import train_local
        with stop_on_signals():
            trainer, package = train_local(config, manifest, val_manifest, runs_dir=runs_dir, resume=resume)
        best = trainer.best
        result = {"package": str(package.folder), "version": package.version, "run": str(trainer.run_dir),
                  "epochs": trainer.epoch, "best_epoch": best["epoch"], "map50": best["map50"],
                  "map_coco": best["map_coco"], "seconds": round(trainer.elapsed, 1)}
        if trainer.init_note:
            result["init"] = trainer.init_note
        if int8:
            from core.quantize import CALIBRATION_FRAMES, quantize_package, spread
            frames = spread(trainer.train_data.images, CALIBRATION_FRAMES)
            quantized, agreement = quantize_package(package, frames, trainer.run_dir / "model-int8", crop=config.crop)
            result.update(int8_package=str(quantized.folder), int8_version=quantized.version, int8_agreement=agreement)
    if as_json:
        echo_json(result)
    else:
        click.echo("\n".join(f"{k}: {v}" for k, v in result.items()))


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=float, default=D.threshold, show_default=True,
              help="Deployed score threshold for precision, recall and the confusion table.")
@click.option("--plot", type=click.Path(file_okay=False), help="Write PR curves (all classes and one per class) here.")
@crop_option
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
@reports_errors
def evaluate(model, manifest, threshold, plot, crop, as_json):
    """Evaluate the package MODEL on MANIFEST: VOC mAP@0.5 (11-point and all-point), COCO
    mAP@[.5:.95], per class, precision/recall at the threshold, confusion, best-F1 threshold.

    Frames run through the same detection path as on the device (--crop as the device's crop).

    \b
    Examples:
      deeplens-ctl evaluate runs/notes/model split/val.manifest
      deeplens-ctl evaluate runs/notes/model val.manifest --threshold 0.6 --plot pr/ --json
      deeplens-ctl evaluate model/ val.manifest --crop stretch
    """
    from core.detector import Detector
    from .train.data import read_manifest
    from .train.inference import evaluate_model
    detector = Detector.open(model, crop=crop)
    samples, _ = read_manifest(manifest)
    with click.progressbar(samples, label="evaluating", file=sys.stderr) as bar:
        result = evaluate_model(detector, bar, threshold=threshold)
    if plot:
        import cv2
        from .train import plots
        Path(plot).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(Path(plot) / "pr_curves.png"), plots.pr_chart(result.pr_curves))
        for cid, (name, curve) in enumerate(result.pr_curves.items()):
            cv2.imwrite(str(Path(plot) / f"pr_{cid}.png"), plots.pr_chart({name: curve}, f"{name}: precision-recall"))
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(result.table())


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=float, default=D.threshold, show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Write annotated copies of the images here.")
@crop_option
@reports_errors
def predict(model, images, threshold, out, crop):
    """Detect objects in IMAGES with the package MODEL: one JSON line per image, boxes
    normalised (as the device publishes them) and in pixels.

    \b
    Examples:
      deeplens-ctl predict runs/notes/model frame.jpg
      deeplens-ctl predict runs/notes/model frames/*.jpg --threshold 0.5 -o annotated/
    """
    import cv2
    from core.detector import Detector, to_pixels
    from .train import plots
    from .train.data import load_image
    detector = Detector.open(model, crop=crop)
    for path in images:
        image = load_image(path)
        height, width = image.shape[:2]
        detections, _ = detector.detect(image, threshold)
        rows = to_pixels([[d["class_id"], d["score"], *d["box"]] for d in detections], width, height)
        echo_json({"image": path, "detections": [
            {**d, "pixels": [round(float(v), 1) for v in row[2:]]} for d, row in zip(detections, rows)]})
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(Path(out) / Path(path).name), plots.draw_boxes(image, rows, detector.classes, (0, 0, 230)))


@click.command("import-sagemaker")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True, help="Package folder to write.")
@click.option("--name", default="model", show_default=True, help="Package name (file prefix).")
@click.option("--class-names", help="Class names in class_id order, comma-separated (SageMaker keeps none).")
@reports_errors
def import_sagemaker(artifact, out, name, class_names):
    """Convert a SageMaker object-detection model.tar.gz into a deployable DeepLens package.

    \b
    Example:
      deeplens-ctl import-sagemaker model.tar.gz --class-names '2000 RUB,1000 RUB' -o package/
    """
    from .train.sagemaker import import_artifact
    package = import_artifact(artifact, out, name=name, classes=names(class_names))
    click.echo(f"{package.folder} {package.name} {package.version}")


@click.group()
def model():
    """Model packages.

    \b
    Example:
      deeplens-ctl model dummy -o dummy/
    """


@model.command()
@click.option("--name", default="dummy", show_default=True)
@click.option("--classes", type=int, default=2, show_default=True)
@click.option("--size", type=int, default=300, show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True)
def dummy(name, classes, size, out):
    """A random-weight package for smoke tests: no training needed.

    \b
    Examples:
      deeplens-ctl model dummy -o dummy/
      deeplens-ctl model dummy --classes 3 --size 256 --name smoke -o smoke/
    """
    from core.ssd import dummy_package
    package = dummy_package(out, name=name, num_classes=classes, size=size)
    click.echo(f"{package.folder} {package.name} {package.version}")


@model.command()
@click.argument("package", type=click.Path(exists=True, file_okay=False))
@click.option("--calib", required=True, type=click.Path(exists=True),
              help="Calibration frames: a manifest (its images) or a folder of images, like the camera's.")
@click.option("--frames", type=click.IntRange(min=1), help="How many frames, spread over --calib  [default: 64].")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Package folder to write (default: PACKAGE-int8).")
@crop_option
@json_option
@reports_errors
def quantize(package, calib, frames, out, crop, as_json):
    """Write the int8 variant of the fp32 PACKAGE, which the device runtime runs about twice as fast.

    Convolutions are quantized with thresholds calibrated on --calib frames (MXNet's oneDNN
    quantization); the detection head stays fp32. The result is a package of its own version
    (model.json: "precision": "int8") to deploy with swap-model; check its accuracy with
    `evaluate` beside the fp32 package's. A real DeepLens's model optimizer takes the fp32 one.

    \b
    Examples:
      deeplens-ctl model quantize runs/notes/model --calib split/train.manifest
      deeplens-ctl model quantize model/ --calib frames/ --frames 32 -o model-int8/
    """
    from core.package import load_package
    from core.quantize import CALIBRATION_FRAMES, quantize_package, spread
    from .dataset.images import IMAGE_EXTENSIONS
    from .train.data import load_image, read_manifest
    source = Path(calib)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        paths = [sample.path for sample in read_manifest(source)[0]]
    images = [load_image(path) for path in spread(paths, frames or CALIBRATION_FRAMES)]
    fp32 = load_package(package)
    int8, agreement = quantize_package(fp32, images, Path(out or f"{Path(package).resolve()}-int8"), crop=crop)
    result = {"package": str(int8.folder), "version": int8.version, "quantized_from": fp32.version, **agreement}
    if as_json:
        echo_json(result)
    else:
        click.echo("\n".join(f"{k}: {v}" for k, v in result.items()))


COMMANDS = [train, evaluate, predict, import_sagemaker, model]
