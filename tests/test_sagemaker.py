"""SageMaker: our model in the algorithm's artifact layout and back, and a training job driven
through boto3 against moto (S3 + SageMaker) and botocore's Stubber; no network."""
import io
import json
import tarfile

import boto3
import numpy as np
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from control.train import TrainError
from core.detector import Detector
from control.train.sagemaker import follow, import_artifact, train_job, write_artifact
from core.errors import ModelError

from test_train import CLASSES, write_synthetic_set

ROLE = "arn:aws:iam::123456789012:role/sagemaker"


def test_our_artifact_imports_back_with_the_same_detections(trained, tmp_path):
    trainer, package, _ = trained
    artifact = write_artifact(package, tmp_path / "model.tar.gz")
    with tarfile.open(artifact) as tar:
        assert sorted(tar.getnames()) == ["hyperparams.json", "model_algo_1-0000.params", "model_algo_1-symbol.json"]
    imported = import_artifact(artifact, tmp_path / "imported", name="back", classes=CLASSES)
    original, converted = Detector.open(package.folder), Detector.open(imported.folder)
    for image in trainer.val_data.images:
        np.testing.assert_allclose(converted.detect_rows([image])[0], original.detect_rows([image])[0], atol=1e-5)


def rewrite(artifact, out, drop=(), replace=None):
    """A copy of the artifact without the members in `drop`, with `replace` {name: bytes}."""
    with tarfile.open(artifact) as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            if member.name in drop:
                continue
            data = (replace or {}).get(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def test_broken_artifacts_are_refused_with_what_is_wrong(trained, tmp_path):
    artifact = write_artifact(trained[1], tmp_path / "model.tar.gz")
    cases = [
        (rewrite(artifact, tmp_path / "a.tar.gz", drop={"model_algo_1-0000.params"}), "lacks model_algo_1-0000.params"),
        (rewrite(artifact, tmp_path / "b.tar.gz", replace={"hyperparams.json": json.dumps({"num_classes": "5"}).encode()}),
         "graph predicts 2 classes but model.json 'classes' lists 5"),
        (rewrite(artifact, tmp_path / "c.tar.gz", replace={"model_algo_1-0000.params": b"junk"}),
         "model_algo_1-0000.params: cannot load"),
    ]
    for bad, message in cases:
        with pytest.raises(ModelError, match=message):
            import_artifact(bad, tmp_path / bad.name.split(".")[0])
    with pytest.raises(ModelError, match="3 class names given but hyperparams.json says num_classes=2"):
        import_artifact(artifact, tmp_path / "d", classes=["a", "b", "c"])


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def test_training_job_end_to_end(aws, trained, tmp_path):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="bkt")
    # What the algorithm would leave: a model of ours in its layout, where moto says the job put it.
    artifact = write_artifact(trained[1], tmp_path / "model.tar.gz")
    for job in ("job-1", "job-2"):
        s3.upload_file(str(artifact), "bkt", f"dl/output/{job}/output/model.tar.gz")
    train_manifest = write_synthetic_set(tmp_path / "data/train", count=4)
    val_manifest = write_synthetic_set(tmp_path / "data/val", count=2, seed=1)
    lines = []
    package = train_job(train_manifest, val_manifest, tmp_path / "runs/sm", role=ROLE, bucket="bkt", prefix="dl",
                        hyperparameters={"epochs": 3}, job_name="job-1", session=aws, echo=lines.append, poll_s=0)
    assert package.classes == CLASSES and Detector.open(package.folder).classes == CLASSES
    job = aws.client("sagemaker").describe_training_job(TrainingJobName="job-1")
    assert job["HyperParameters"] == {"num_classes": "2", "num_training_samples": "4", "image_shape": "300", "epochs": "3"}
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith("/object-detection:1")
    train = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert train["S3DataType"] == "AugmentedManifestFile" and train["AttributeNames"] == ["source-ref", "labels"]
    uploaded = json.loads(s3.get_object(Bucket="bkt", Key="dl/manifests/train.manifest")["Body"].read().splitlines()[0])
    assert uploaded["source-ref"] == "s3://bkt/dl/images/train/img0.png"
    assert lines[0].startswith("train: 4 images uploaded, 0 already") and any("Completed" in line for line in lines)
    lines.clear()     # a second job finds every image already there
    train_job(train_manifest, val_manifest, tmp_path / "runs/sm2", role=ROLE, bucket="bkt", prefix="dl",
              job_name="job-2", session=aws, echo=lines.append, poll_s=0)
    assert lines[:2] == ["train: 0 images uploaded, 4 already in s3://bkt/dl/images/",
                         "validation: 0 images uploaded, 2 already in s3://bkt/dl/images/"]


def test_a_failed_job_is_reported_with_its_reason():
    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(sm)
    base = {"TrainingJobName": "j", "TrainingJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/j",
            "ModelArtifacts": {"S3ModelArtifacts": ""}, "AlgorithmSpecification": {"TrainingInputMode": "Pipe"},
            "RoleArn": ROLE, "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
            "ResourceConfig": {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60}, "CreationTime": "2024-01-01T00:00:00Z"}
    stubber.add_response("describe_training_job", dict(base, TrainingJobStatus="InProgress", SecondaryStatus="Training",
                                                       FinalMetricDataList=[{"MetricName": "validation:mAP", "Value": 0.5}]),
                         {"TrainingJobName": "j"})
    stubber.add_response("describe_training_job", dict(base, TrainingJobStatus="Failed", SecondaryStatus="Failed",
                                                       FailureReason="ClientError: no validation channel"),
                         {"TrainingJobName": "j"})
    lines = []
    with stubber, pytest.raises(TrainError, match="training job j failed: ClientError: no validation channel"):
        follow(sm, "j", lines.append, poll_s=0)
    assert lines == ["j: InProgress (Training)", "  validation:mAP = 0.5", "j: Failed (Failed)"]
