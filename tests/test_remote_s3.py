"""The S3 remote through dvc-s3, against moto's S3 server on loopback."""

from __future__ import annotations

import shutil

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.test_pipeline import tree_digest

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_endpoint(monkeypatch):
    """Run moto's S3 server on an ephemeral loopback port with a fresh bucket."""
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    url = f"http://{host}:{port}"
    # Dummy credentials, from the environment as real ones would be.
    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="dsrepo")
    try:
        yield url, creds
    finally:
        srv.stop()


def test_push_and_pull_through_s3(project, s3_endpoint):
    s3_endpoint, creds = s3_endpoint
    project.env.update(creds)
    project.dvc("remote", "add", "-f", "-d", "s3", "s3://dsrepo/store")
    project.dvc("remote", "modify", "s3", "endpointurl", s3_endpoint)
    project.dvc("repro")
    before = tree_digest(project.path / "data")
    project.dvc("push")
    objects = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="dsrepo")
    assert objects["KeyCount"] > 0
    shutil.rmtree(project.path / ".dvc" / "cache")
    for sub in ("fetch", "clean", "npz"):
        shutil.rmtree(project.path / "data" / "lila" / sub)
    project.dvc("pull")
    assert tree_digest(project.path / "data") == before
    assert "up to date" in project.dvc("status").stdout
    config = (project.path / ".dvc" / "config").read_text()
    assert "testing" not in config  # credentials stay in the environment
