"""deeplens-ctl verbs of this group (see control/cli.py): pull, labels, manifest.

Each command is a thin wrapper over control.dataset, with the conventions of control.cli_common:
a DatasetError becomes one sentence (with the file:line field: problems under it) and exit 1.
"""
import functools
import os
import sys

import click

from . import dataset as ds
from .cli_common import device_argument, echo_json, json_option, progress, user_errors
from .dataset import sagemaker


def _reading_options(func):
    """Options shared by every command that reads labels or manifests."""
    @click.option("--class-map", help="Class names and ids: 'cat,dog', '0=cat,1=dog', or a file "
                  "(.json/.yaml list or {id: name}, or one name per line). Fixes ids; unknown names are problems.")
    @click.option("--images-root", type=click.Path(file_okay=False),
                  help="Where to look for images (default: beside the input). s3:// and URL references "
                       "are matched by their trailing path below it.")
    @click.option("--label-attribute", help="Manifest label attribute to read (default: found per line).")
    @functools.wraps(func)
    def wrapper(*args, class_map, **kwargs):
        with user_errors():
            names = ds.parse_class_map(class_map) if class_map else None
        return func(*args, class_names=names, **kwargs)
    return wrapper


def _read(format, paths, class_names, images_root, label_attribute, strict=False):
    """Read, print the problems to stderr, return the dataset."""
    with user_errors():
        dataset, problems = ds.read(format, paths, class_names=class_names, images_root=images_root,
                                    strict=strict, attribute=label_attribute)
    for problem in problems:
        click.echo(str(problem), err=True)
    return dataset, problems


def _summary(dataset, out, problems, as_json):
    result = {"out": str(out), "images": len(dataset.images), "boxes": dataset.box_count,
              "classes": dataset.classes, "problems": len(problems)}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"wrote {out}: {result['images']} images, {result['boxes']} boxes, classes "
                   f"{', '.join(f'{i}={n}' for i, n in enumerate(dataset.classes))}; {len(problems)} problem(s)")


_out_manifest = click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
                             help="Manifest to write (written whole or not at all).")
_manifest_writing = [
    click.option("--s3-prefix", help="Write source-ref as S3 URIs: this prefix + the image path below the images' "
                 "common folder (default: paths relative to the manifest)."),
    click.option("--out-attribute", default=sagemaker.DEFAULT_ATTRIBUTE, show_default=True,
                 help="Label attribute name to write."),
]


def _writing_options(func):
    for option in reversed(_manifest_writing):
        func = option(func)
    return func


def _write_manifest(dataset, out, s3_prefix, out_attribute):
    with user_errors():
        ds.write("sagemaker", dataset, out, attribute=out_attribute, s3_prefix=s3_prefix)


# ---- pull -------------------------------------------------------------------------------------

@click.command()
@device_argument
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Folder for frames and sidecars.")
@click.option("-n", "--count", type=click.IntRange(1), help="Stop when the folder holds this many frames "
              "(so re-running the same command resumes).")
@click.option("--duration", type=click.FloatRange(0, min_open=True), help="Or stop after this many seconds.")
@click.option("--interval-ms", type=click.IntRange(0), default=500, show_default=True,
              help="Pause between captures.")
@click.option("--format", "image_format", type=click.Choice(["jpeg", "png"]), default="jpeg", show_default=True)
@click.option("--crop", type=click.Choice(["square", "none"]), default="square", show_default=True,
              help="The device's centre crop, as DeepLens models see frames.")
@click.option("--size", type=click.IntRange(16), default=300, show_default=True, help="Resize on the device to N px.")
@click.option("--dedup-threshold", type=click.IntRange(0, 256), default=10, show_default=True,
              help="Skip a frame whose 256-bit perceptual hash is within this many bits of a kept one "
                   "(0: identical frames only).")
@click.option("--retries", type=click.IntRange(0), default=5, show_default=True,
              help="Tries per frame on errors, with exponential backoff.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Seconds per request.")
@click.option("--worth-labelling", is_flag=True,
              help="Instead of capturing, fetch the frames the device kept as worth labelling (uncertain, "
                   "count changed, marked), pre-labelled with its detections; each once (-n caps the folder).")
@json_option
def pull(client, out, count, duration, interval_ms, image_format, crop, size, dedup_threshold, retries, timeout,
         worth_labelling, as_json):
    """Collect clean frames from a device's /capture into a folder, for labelling.

    Frames are saved as frame_NNNNNN.jpg with a frame_NNNNNN.json sidecar (device, time,
    sequence number). Numbering continues after what the folder holds, near-duplicates of
    kept frames are skipped, and frames with a flat band (a broken capture) are refused.
    Stop it at any time: running the same command again carries on.

    With --worth-labelling it fetches instead the frames the device kept on its own (GET
    /keep): those it was unsure about, those where its count changed, and those marked with
    POST /keep. Their sidecars hold the model's detections as suggested boxes (`truth`), so
    `labels import -f images` reads them pre-labelled; frames fetched before are skipped.

    \b
    Examples:
      deeplens-ctl pull http://camera:8080 -n 200 -o frames/
      deeplens-ctl pull kitchen --duration 600 --interval-ms 2000 -o frames/
      deeplens-ctl pull http://camera:8080 -n 50 --size 512 --format png -o frames/
      deeplens-ctl pull --worth-labelling kitchen -o frames/
    """
    from .dataset.pull import PullError, Puller
    if worth_labelling:
        return _pull_worth_labelling(client, out, count, duration, retries, timeout, as_json)
    if count is None and duration is None:
        raise click.UsageError("give -n/--count or --duration (or both)")
    client.timeout = timeout
    puller = Puller(client, out, image_format=image_format, crop=None if crop == "none" else crop, size=size,
                    dedup_threshold=dedup_threshold, retries=retries)
    with click.progressbar(length=count or 0, label="pulling", file=sys.stderr, show_pos=True) as bar:
        bar.update(min(puller.kept, count or 0))
        try:
            result = puller.run(count=count, duration=duration, interval=interval_ms / 1000,
                                on_frame=lambda kept: bar.update(1))
        except PullError as exc:
            raise click.ClickException(f"{exc} ({puller.kept} frames in {out}; run again to resume)") from None
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{out}: {result['kept']} frames ({result['new']} new, {result['duplicates']} near-duplicates "
                   f"skipped, {result['rejected']} broken frames refused)")


def _pull_worth_labelling(client, out, count, duration, retries, timeout, as_json):
    """pull --worth-labelling: the device's kept frames not fetched yet, with a progress bar."""
    from .dataset.pull import KeptPuller, PullError
    if duration is not None:
        raise click.UsageError("--duration does not apply with --worth-labelling: it fetches what the device kept")
    client.timeout = timeout
    puller = KeptPuller(client, out, retries=retries)
    try:
        todo = puller.pending(count)
        with click.progressbar(todo, label="fetching", file=sys.stderr, show_pos=True) as bar:
            for entry in bar:
                puller.fetch(entry)
    except PullError as exc:
        raise click.ClickException(f"{exc} ({puller.kept} frames in {out}; run again to resume)") from None
    result = puller.result()
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{out}: {result['kept']} frames ({result['new']} new frames worth labelling, "
                   f"{result['fetched_before']} fetched before, {result['gone']} dropped on the device meanwhile)")


# ---- labels -----------------------------------------------------------------------------------

@click.group()
def labels():
    """Labels made in other tools, turned into our manifest."""


@labels.command("import")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-f", "--format", "format", required=True, help=f"Input format: {', '.join(ds.READERS)}.")
@_out_manifest
@_reading_options
@_writing_options
@click.option("--strict", is_flag=True, help="Fail on any problem (missing image, box outside the image, "
              "zero-area box, unknown class) instead of reporting it and skipping what is wrong.")
@json_option
def import_labels(inputs, format, out, class_names, images_root, label_attribute, s3_prefix, out_attribute,
                  strict, as_json):
    """Read label exports into one manifest with one class map.

    Several INPUTS (e.g. one export per labelling project) are merged: classes are matched
    by name (case, spaces, '_' and '-' ignored), so each project's own ids do not matter.
    Boxes are scaled with each image's real width and height. Problems are listed as
    file:line: field: message on stderr.

    \b
    Examples:
      deeplens-ctl labels import -f labelbox export.json -o data.manifest
      deeplens-ctl labels import -f labelbox-ndjson front.ndjson back.ndjson \\
          --class-map '2000 RUB,1000 RUB' --images-root frames/ -o data.manifest
      deeplens-ctl labels import -f coco instances.json --strict -o data.manifest
      deeplens-ctl labels import -f yolo yolo-folder/ -o data.manifest --s3-prefix s3://bucket/frames/
    """
    dataset, problems = _read(format, inputs, class_names, images_root, label_attribute, strict)
    _write_manifest(dataset, out, s3_prefix, out_attribute)
    _summary(dataset, out, problems, as_json)


# ---- manifest ---------------------------------------------------------------------------------

@click.group()
def manifest():
    """Build, merge, split, check and export SageMaker augmented manifests."""


@manifest.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-f", "--from", "format", help="Read INPUTS as labels of this format "
              f"({', '.join(ds.READERS)}); without it INPUTS are images or folders of images, unlabelled.")
@_out_manifest
@_reading_options
@_writing_options
@json_option
def build(inputs, format, out, class_names, images_root, label_attribute, s3_prefix, out_attribute, as_json):
    """Write a SageMaker Ground Truth object-detection manifest, for SageMaker and our trainer alike.

    Each line has source-ref, the label attribute (image_size, annotations) and its
    -metadata (class-map, type, human-annotated, creation-date). Unlabelled images (no
    --from) give a manifest to start a Ground Truth labelling job with.

    \b
    Examples:
      deeplens-ctl manifest build frames/ -o unlabelled.manifest --s3-prefix s3://bucket/frames/
      deeplens-ctl manifest build -f voc annotations/ -o data.manifest --out-attribute cash
    """
    dataset, problems = _read(format or "images", inputs, class_names, images_root, label_attribute)
    _write_manifest(dataset, out, s3_prefix, out_attribute)
    _summary(dataset, out, problems, as_json)


@manifest.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@_out_manifest
@_reading_options
@_writing_options
@json_option
def merge(manifests, out, class_names, images_root, label_attribute, s3_prefix, out_attribute, as_json):
    """Merge manifests into one, remapping class ids by class name.

    Inputs may use different label attribute names and class maps; the result has one
    attribute (--out-attribute) and one class map (in order of appearance, or --class-map).

    \b
    Example:
      deeplens-ctl manifest merge front.manifest back.manifest -o all.manifest
    """
    dataset, problems = _read("sagemaker", manifests, class_names, images_root, label_attribute)
    _write_manifest(dataset, out, s3_prefix, out_attribute)
    _summary(dataset, out, problems, as_json)


@manifest.command()
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Folder for train.manifest, val.manifest (and test.manifest).")
@click.option("--ratios", default="0.8,0.2", show_default=True,
              help="train,val or train,val,test fractions.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--group-threshold", type=click.IntRange(0, 256), default=10, show_default=True,
              help="Images whose 256-bit perceptual hashes differ in at most this many bits are one group "
                   "and stay on one side.")
@_reading_options
@_writing_options
@json_option
def split(manifest_file, out, ratios, seed, group_threshold, class_names, images_root, label_attribute,
          s3_prefix, out_attribute, as_json):
    """Split a manifest into train/val(/test): deterministic, stratified, group-aware.

    Near-duplicate frames (consecutive captures of one scene) never straddle the split;
    groups are dealt so that each split gets its share of every class.

    \b
    Examples:
      deeplens-ctl manifest split data.manifest -o split/
      deeplens-ctl manifest split data.manifest --ratios 0.7,0.2,0.1 --seed 7 -o split/
    """
    from .dataset.split import split as split_dataset
    try:
        fractions = [float(r) for r in ratios.split(",")]
    except ValueError:
        raise click.BadParameter("fractions separated by commas, e.g. 0.8,0.2", param_hint="--ratios") from None
    if len(fractions) not in (2, 3) or min(fractions) < 0 or sum(fractions) <= 0:
        raise click.BadParameter("two or three non-negative fractions, e.g. 0.8,0.2", param_hint="--ratios")
    dataset, _ = _read("sagemaker", [manifest_file], class_names, images_root, label_attribute)
    with user_errors():
        parts = split_dataset(dataset, fractions, seed=seed, threshold=group_threshold)
        os.makedirs(out, exist_ok=True)
        result = {}
        for name, part in zip(("train", "val", "test"), parts):
            path = os.path.join(out, f"{name}.manifest")
            ds.write("sagemaker", part, path, attribute=out_attribute, s3_prefix=s3_prefix)
            result[name] = {"manifest": path, "images": len(part.images), "boxes": part.box_count}
    if as_json:
        echo_json(result)
    else:
        for name, info in result.items():
            click.echo(f"{info['manifest']}: {info['images']} images, {info['boxes']} boxes")


@manifest.command()
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(exists=True, dir_okay=False))
@_reading_options
@click.option("--fast", is_flag=True, help="Read image headers only: skips the broken-frame check.")
@click.option("--drop-invalid", is_flag=True, help="Write a copy without the lines that have an error "
              "(needs -o); every other line is kept byte-for-byte. Warnings drop nothing.")
@click.option("-o", "--out", type=click.Path(dir_okay=False),
              help="With --drop-invalid: the manifest to write (not MANIFEST itself).")
@json_option
def validate(manifest_file, class_names, images_root, label_attribute, fast, drop_invalid, out, as_json):
    """Check a manifest; list every problem with line number and field.

    Finds: bad JSON, missing fields, missing or unreadable images, image_size that
    differs from the file, boxes outside the image or of zero area, class ids absent from
    the class-map, broken frames (a flat band at the bottom). Exit status 0 when there is
    no error (warnings allowed), 1 otherwise.

    With --drop-invalid -o OUT, OUT gets every line without an error, unchanged, and the
    dropped lines are listed with their reasons; exit status 0 once OUT is written.

    \b
    Examples:
      deeplens-ctl manifest validate data.manifest
      deeplens-ctl manifest validate sg.manifest --images-root images/ --json
      deeplens-ctl manifest validate data.manifest --drop-invalid -o clean.manifest
    """
    if drop_invalid != bool(out):
        raise click.UsageError("--drop-invalid needs -o/--out" if drop_invalid else "-o/--out goes with --drop-invalid")
    if out and os.path.exists(out) and os.path.samefile(out, manifest_file):
        raise click.BadParameter("must not be MANIFEST: the input stays as it is, so that nothing is lost if "
                                 "a line was dropped wrongly", param_hint="-o/--out")
    collector = ds.Collector(class_names, images_root)
    with user_errors():
        problems = sagemaker.validate(collector, manifest_file, attribute=label_attribute,
                                      check_pixels=not fast, progress=progress("checking images"))
    errors = sum(p.severity == "error" for p in problems)
    if out:
        return _drop_invalid(manifest_file, problems, out, as_json)
    if as_json:
        echo_json({"usable": errors == 0, "errors": errors, "warnings": len(problems) - errors,
                   "problems": [p.to_json() for p in problems]}, indent=2)
    else:
        for problem in problems:
            click.echo(str(problem))
        click.echo(f"{manifest_file}: {errors} error(s), {len(problems) - errors} warning(s): "
                   + ("usable" if not errors else "not usable"))
    sys.exit(1 if errors else 0)


def _drop_invalid(manifest_file, problems, out, as_json):
    with user_errors():
        kept, total, dropped = sagemaker.drop_invalid(manifest_file, problems, out)
    warnings = [p for p in problems if p.severity == "warning"]
    if os.path.dirname(os.path.abspath(out)) != os.path.dirname(os.path.abspath(manifest_file)):
        click.echo(f"note: {out} is not beside {manifest_file}: its lines are unchanged, so relative "
                   "source-refs in it no longer point at the images (keep it beside, or use --images-root)", err=True)
    if as_json:
        echo_json({"out": str(out), "lines": total, "kept": kept,
                   "dropped": [{"line": line, "reason": reason} for line, reason in dropped],
                   "warnings": [p.to_json() for p in warnings]}, indent=2)
    else:
        for line, reason in dropped:
            click.echo(f"{manifest_file}:{line}: dropped: {reason}")
        for problem in warnings:
            click.echo(str(problem))
        click.echo(f"kept {kept} of {total} lines -> {out}")


@manifest.command()
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(exists=True, dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write the distributions as a PNG.")
@_reading_options
@json_option
def stats(manifest_file, plot, class_names, images_root, label_attribute, as_json):
    """Images, boxes per class, boxes per image, box sizes and image sizes.

    \b
    Examples:
      deeplens-ctl manifest stats data.manifest
      deeplens-ctl manifest stats data.manifest --plot stats.png --json
    """
    from .dataset.stats import format_stats, plot as plot_stats, stats as compute
    dataset, _ = _read("sagemaker", [manifest_file], class_names, images_root, label_attribute)
    result = compute(dataset)
    if plot:
        with user_errors():
            plot_stats(result, plot)
    if as_json:
        echo_json(result, indent=2)
    else:
        click.echo(format_stats(result))


@manifest.command()
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--limit", type=click.IntRange(1), default=36, show_default=True, help="Images on the sheet.")
@click.option("--columns", type=click.IntRange(1), default=6, show_default=True)
@click.option("--tile", type=click.IntRange(32), default=200, show_default=True, help="Tile size in px.")
@_reading_options
def preview(manifest_file, out, limit, columns, tile, class_names, images_root, label_attribute):
    """Draw images with their boxes and class names on one PNG, to check labels by eye.

    \b
    Example:
      deeplens-ctl manifest preview data.manifest -o sheet.png --limit 48 --columns 8
    """
    from .dataset.preview import contact_sheet
    dataset, _ = _read("sagemaker", [manifest_file], class_names, images_root, label_attribute)
    with user_errors():
        shown = contact_sheet(dataset, out, columns=columns, tile=tile, limit=limit, progress=progress("drawing"))
    click.echo(f"wrote {out}: {shown} images")


@manifest.command()
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(exists=True, dir_okay=False))
@click.option("-f", "--format", "format", required=True, help=f"Output format: {', '.join(ds.WRITERS)}.")
@click.option("-o", "--out", required=True, type=click.Path(),
              help="coco: a .json file; voc, yolo: a folder; recordio: a prefix (writes .lst, .rec, .idx).")
@_reading_options
@json_option
def export(manifest_file, format, out, class_names, images_root, label_attribute, as_json):
    """Export a manifest to COCO, Pascal VOC, YOLO or MXNet RecordIO.

    RecordIO is what SageMaker's object-detection algorithm reads in File mode: a .lst with
    header width 2, object width 5 and normalised corners, packed into .rec/.idx.

    \b
    Examples:
      deeplens-ctl manifest export data.manifest -f coco -o data.json
      deeplens-ctl manifest export data.manifest -f recordio -o train     # train.lst/.rec/.idx
      deeplens-ctl manifest export data.manifest -f yolo -o yolo/
    """
    dataset, problems = _read("sagemaker", [manifest_file], class_names, images_root, label_attribute)
    with user_errors():
        ds.write(format, dataset, out)
    _summary(dataset, out, problems, as_json)


COMMANDS = [pull, labels, manifest]
