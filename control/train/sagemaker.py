"""SageMaker's built-in object-detection algorithm: its artifact layout, both ways, and
training jobs driven through boto3 (docs/model-package.md, "SageMaker artifacts").

The artifact `model.tar.gz` holds `hyperparams.json` and the MXNet checkpoint of the
*training* graph, `model_algo_1-symbol.json` / `-0000.params`, whose multibox layer names its
outputs `multibox_cls_pred` (B, C+1, N), `multibox_loc_pred` (B, 4N) and `multibox_anchors`.
Importing rebuilds the inference graph from those three, as mxnet's example/ssd/deploy.py did
for DeepLens: SoftmaxActivation(mode='channel') + MultiBoxDetection.
"""
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import mxnet as mx

from control.dataset import read, write
from control.dataset.sagemaker import DEFAULT_ATTRIBUTE

from core.errors import ModelError
from core.package import write_package

from . import TrainError
from .data import read_manifest
from core.detector import Detector, detection_inputs

PREFIX = "model_algo_1"
MULTIBOX = ("multibox_cls_pred", "multibox_loc_pred", "multibox_anchors")
HYPERPARAMS = "hyperparams.json"
# Registry accounts of the object-detection image per region (the notes list these).
IMAGE_ACCOUNTS = {"us-east-1": "811284229777", "us-east-2": "825641698319", "us-west-2": "433757028032",
                  "eu-west-1": "685385470294", "eu-central-1": "813361260812", "ap-northeast-1": "501404015308"}


def training_graph(cls_pred, loc_pred, anchors, nms_threshold=0.45):
    """The algorithm's training head (mxnet example/ssd symbol_builder.get_symbol_train)."""
    cls_pred = mx.sym.reshape(cls_pred, shape=(0, 0, -1), name=MULTIBOX[0])
    loc_pred = mx.sym.Flatten(loc_pred, name=MULTIBOX[1])
    anchors = mx.sym.reshape(anchors, shape=(0, -1, 4), name=MULTIBOX[2])
    loc_target, loc_mask, cls_target = mx.sym.contrib.MultiBoxTarget(
        anchors, mx.sym.var("label"), cls_pred, overlap_threshold=0.5, ignore_label=-1, negative_mining_ratio=3,
        minimum_negative_samples=0, negative_mining_thresh=0.5, variances=(0.1, 0.1, 0.2, 0.2), name="multibox_target")
    cls_prob = mx.sym.SoftmaxOutput(cls_pred, cls_target, ignore_label=-1, use_ignore=True, multi_output=True,
                                    normalization="valid", name="cls_prob")
    loc_loss = mx.sym.MakeLoss(mx.sym.smooth_l1(loc_mask * (loc_pred - loc_target), scalar=1.0),
                               normalization="valid", name="loc_loss")
    cls_label = mx.sym.MakeLoss(cls_target, grad_scale=0, name="cls_label")
    det = mx.sym.contrib.MultiBoxDetection(cls_prob, loc_pred, anchors, nms_threshold=nms_threshold,
                                           variances=(0.1, 0.1, 0.2, 0.2), name="detection")
    return mx.sym.Group([cls_prob, loc_loss, cls_label, mx.sym.MakeLoss(det, grad_scale=0, name="det_out")])


def write_artifact(package, path, base_network="mobilenet"):
    """A SageMaker-layout model.tar.gz of one of our packages (for incremental training there,
    or hosting on a SageMaker endpoint)."""
    symbol = mx.sym.load(str(package.symbol_path))
    probs, loc, anchors = detection_inputs(symbol, package.symbol_path)
    internals = symbol.get_internals()
    softmax_input = internals[probs].get_children()[0]
    train = training_graph(softmax_input, internals[loc], internals[anchors])
    hyperparams = {"num_classes": str(len(package.classes)), "image_shape": str(package.width),
                   "base_network": base_network, "nms_threshold": "0.45"}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in ((f"{PREFIX}-symbol.json", train.tojson().encode()),
                           (f"{PREFIX}-0000.params", package.params_path.read_bytes()),
                           (HYPERPARAMS, json.dumps(hyperparams).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return Path(path)


def _artifact_members(tar, where):
    names = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
    missing = [n for n in (f"{PREFIX}-symbol.json", f"{PREFIX}-0000.params", HYPERPARAMS) if n not in names]
    if missing:
        raise ModelError(f"not a SageMaker object-detection artifact: lacks {', '.join(missing)}", where)
    return {n: tar.extractfile(m).read() for n, m in names.items()}


def import_artifact(tarball, folder, name="model", classes=None, nms_threshold=None):
    """Convert a SageMaker object-detection model.tar.gz into our deployable package in `folder`.
    `classes` names the class ids (SageMaker keeps no names); default `class<id>`."""
    try:
        with tarfile.open(tarball) as tar:
            files = _artifact_members(tar, tarball)
    except (OSError, tarfile.TarError) as exc:
        raise ModelError(f"cannot read the artifact ({exc})", tarball) from None
    try:
        hyper = json.loads(files[HYPERPARAMS])
        count, size = int(hyper["num_classes"]), int(hyper.get("image_shape", 300))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{HYPERPARAMS} lacks a valid num_classes/image_shape ({exc})", tarball) from None
    classes = list(classes) if classes else [f"class{i}" for i in range(count)]
    if len(classes) != count:
        raise ModelError(f"{len(classes)} class names given but {HYPERPARAMS} says num_classes={count}", tarball)
    try:
        train = mx.sym.load_json(files[f"{PREFIX}-symbol.json"].decode())
    except Exception as exc:  # MXNet raises its own MXNetError or ValueError
        raise ModelError(f"{PREFIX}-symbol.json: cannot load ({exc})", tarball) from None
    internals = train.get_internals()
    outputs = internals.list_outputs()
    lacking = [m for m in MULTIBOX if f"{m}_output" not in outputs]
    if lacking:
        raise ModelError(f"{PREFIX}-symbol.json has no {', '.join(lacking)}: not an object-detection graph", tarball)
    cls_pred, loc_pred, anchors = (internals[f"{m}_output"] for m in MULTIBOX)
    nms = float(nms_threshold or hyper.get("nms_threshold", 0.45))
    probs = mx.sym.SoftmaxActivation(cls_pred, mode="channel", name="cls_prob")
    deploy = mx.sym.contrib.MultiBoxDetection(probs, loc_pred, anchors, clip=True, threshold=0.01, nms_threshold=nms,
                                              nms_topk=400, variances=(0.1, 0.1, 0.2, 0.2), name="detection")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".params") as tmp:
        tmp.write(files[f"{PREFIX}-0000.params"])
        tmp.flush()
        try:
            params = mx.nd.load(tmp.name)
        except Exception as exc:
            raise ModelError(f"{PREFIX}-0000.params: cannot load ({exc})", tarball) from None
    needed = {f"arg:{a}" for a in deploy.list_arguments()} | {f"aux:{a}" for a in deploy.list_auxiliary_states()}
    deploy.save(str(folder / f"{name}-symbol.json"))
    mx.nd.save(str(folder / f"{name}-0000.params"), {k: v for k, v in params.items() if k in needed})
    package = write_package(folder, name, classes, size, size,
                            source={"recipe": "sagemaker object-detection", "hyperparameters": hyper})
    Detector.open(folder)    # refuses a graph whose params or class count do not fit, naming what is wrong
    return package


def image_uri(region):
    try:
        return f"{IMAGE_ACCOUNTS[region]}.dkr.ecr.{region}.amazonaws.com/object-detection:1"
    except KeyError:
        raise TrainError(f"no known object-detection image for region {region!r}; "
                         f"known: {', '.join(sorted(IMAGE_ACCOUNTS))}") from None


def upload_channel(s3, manifest, bucket, prefix, channel, root, echo):
    """Upload the manifest's images below `root` (skipping those already there, same size) and
    the manifest rewritten with their s3:// refs; returns the manifest's URI."""
    dataset, _ = read("sagemaker", str(manifest), strict=True)
    uploaded = 0
    for image in dataset.images:
        key = f"{prefix}/images/{Path(os.path.relpath(image.path, root)).as_posix()}"
        try:
            if s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == os.path.getsize(image.path):
                continue
        except s3.exceptions.ClientError:
            pass
        s3.upload_file(image.path, bucket, key)
        uploaded += 1
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, f"{channel}.manifest")
        write("sagemaker", dataset, local, s3_prefix=f"s3://{bucket}/{prefix}/images", images_root=root)
        key = f"{prefix}/manifests/{channel}.manifest"
        s3.upload_file(local, bucket, key)
    echo(f"{channel}: {uploaded} images uploaded, {len(dataset.images) - uploaded} already in s3://{bucket}/{prefix}/images/")
    return f"s3://{bucket}/{key}"


def follow(sm, job, echo, poll_s=30):
    """Poll the job until it ends, echoing status changes and the metrics it reports."""
    seen_status, seen_metrics = None, set()
    while True:
        described = sm.describe_training_job(TrainingJobName=job)
        status = (described["TrainingJobStatus"], described.get("SecondaryStatus"))
        if status != seen_status:
            echo(f"{job}: {status[0]} ({status[1]})")
            seen_status = status
        for metric in described.get("FinalMetricDataList", []):
            key = (metric["MetricName"], metric["Value"])
            if key not in seen_metrics:
                seen_metrics.add(key)
                echo(f"  {metric['MetricName']} = {metric['Value']:g}")
        if status[0] in ("Completed", "Failed", "Stopped"):
            if status[0] != "Completed":
                raise TrainError(f"training job {job} {status[0].lower()}: {described.get('FailureReason', 'no reason given')}")
            return described
        time.sleep(poll_s)


def train_job(manifest, val_manifest, run_dir, role, bucket, prefix="deeplens-kit", region=None,
              instance_type="ml.p3.2xlarge", hyperparameters=None, size=300, class_names=None,
              job_name=None, session=None, echo=print, poll_s=30):
    """Train with the built-in algorithm (augmented manifests in Pipe mode), download the
    artifact to `run_dir`/model.tar.gz and convert it into the package `run_dir`/model."""
    import boto3     # here: local training writes artifacts without loading boto3
    if not val_manifest:
        raise TrainError("SageMaker's object-detection algorithm needs a validation channel: pass --val")
    session = session or boto3.session.Session(region_name=region)
    s3, sm = session.client("s3"), session.client("sagemaker")
    samples, classes = read_manifest(manifest)
    val_samples, _ = read_manifest(val_manifest)
    classes = list(class_names or classes)
    job = job_name or f"deeplens-{time.strftime('%Y%m%d-%H%M%S')}"
    root = os.path.commonpath([str(s.path.parent) for s in samples + val_samples])
    channels = [{"ChannelName": channel, "DataSource": {"S3DataSource": {
        "S3DataType": "AugmentedManifestFile", "S3Uri": upload_channel(s3, path, bucket, prefix, channel, root, echo),
        "S3DataDistributionType": "FullyReplicated", "AttributeNames": ["source-ref", DEFAULT_ATTRIBUTE]}},
        "ContentType": "application/x-recordio", "RecordWrapperType": "RecordIO", "CompressionType": "None"}
        for channel, path in (("train", manifest), ("validation", val_manifest))]
    hyper = {"num_classes": str(len(classes)), "num_training_samples": str(len(samples)), "image_shape": str(size),
             **{k: str(v) for k, v in (hyperparameters or {}).items()}}
    sm.create_training_job(
        TrainingJobName=job, RoleArn=role, HyperParameters=hyper,
        AlgorithmSpecification={"TrainingImage": image_uri(session.region_name), "TrainingInputMode": "Pipe"},
        InputDataConfig=channels, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/{prefix}/output"},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 86400})
    described = follow(sm, job, echo, poll_s)
    uri = described["ModelArtifacts"]["S3ModelArtifacts"]
    artifact_bucket, _, key = uri[len("s3://"):].partition("/")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    s3.download_file(artifact_bucket, key, str(run_dir / "model.tar.gz"))
    echo(f"downloaded {uri}")
    return import_artifact(run_dir / "model.tar.gz", run_dir / "model", name=run_dir.name, classes=classes)
