"""Azure Blob against Azurite (the Azure Storage emulator, from npm): a DVC remote through
dvc-azure, and LILA's `cloud: azure` mirror read with a real SAS token from the Azure SDK."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from stages.core.errors import StageError
from stages.core.executor import LocalExecutor
from stages.fetch import fetch
from stages.pipeline.compose import group_defaults
from stages.sources import load
from standins.lila import LilaStandin
from tests.conftest import ROOT, Project, git, lila_conf
from tests.test_pipeline import tree_digest

AZURITE = ROOT / "tests" / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (published in its README; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
LISTENING = re.compile(r"listens on (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Run Azurite's blob service on an ephemeral loopback port; yield its account URL."""
    if not AZURITE.exists():
        pytest.fail(f"{AZURITE} is missing: `make test` installs it (npm ci)")
    log = tmp_path_factory.mktemp("azurite") / "out.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(AZURITE),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            found = LISTENING.search(log.read_text())
            if found or proc.poll() is not None:
                break
            time.sleep(0.05)
        if not found:
            pytest.fail(f"Azurite did not start: {log.read_text()}")
        yield f"{found.group(1)}/{ACCOUNT}"
    finally:
        proc.terminate()
        proc.wait(30)


def connection_string(account_url: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={account_url};"
    )


def test_dvc_remote_on_azure_push_clone_pull(project, azurite, tmp_path):
    conn = connection_string(azurite)
    BlobServiceClient.from_connection_string(conn).create_container("dvcstore")
    # The secret comes from the environment, as a real one would.
    project.env["AZURE_STORAGE_CONNECTION_STRING"] = conn
    project.dvc("remote", "add", "-f", "-d", "az", "azure://dvcstore/store")
    project.dvc("repro")
    before = tree_digest(project.path / "data")
    project.git("add", "-A")
    project.git("commit", "-qm", "build")
    project.dvc("push")
    blobs = list(
        BlobServiceClient.from_connection_string(conn).get_container_client("dvcstore").list_blobs()
    )
    assert blobs
    git(tmp_path, "clone", "-q", str(project.path), str(tmp_path / "clone"))
    clone = Project(tmp_path / "clone", project.cache)
    clone.env = project.env
    clone.dvc("pull")
    assert tree_digest(clone.path / "data") == before
    assert "up to date" in clone.dvc("status").stdout
    assert KEY not in (project.path / ".dvc" / "config").read_text()


@pytest.fixture(scope="module")
def mirror(azurite, standin_root):
    """Upload the LILA stand-in's metadata and images into a private Azurite container, under
    the names LILA's Azure mirror uses; yield the container URL."""
    service = BlobServiceClient.from_connection_string(connection_string(azurite))
    container = service.create_container("lila-wildlife")  # private: no anonymous reads
    for path in sorted(standin_root.rglob("*")):
        rel = path.relative_to(standin_root).as_posix()
        if path.is_file() and (rel.endswith(".zip") or rel.endswith(".jpg")):
            with open(path, "rb") as fh:
                container.upload_blob(f"azure/{rel}", fh)
    return f"{azurite}/lila-wildlife"


def sas_token(**over) -> str:
    return generate_container_sas(
        ACCOUNT,
        "lila-wildlife",
        account_key=over.get("key", KEY),
        permission=ContainerSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def azure_fetch(index, mirror, out, cache):
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(mirror))
    cfg = lila_conf(
        index_url=index.index_url,
        dataset="NACTI-demo",
        cloud="azure",
        sas_token_env="LILA_SAS",
        sas_token_origins=[origin],
    )
    return fetch(
        load("lila"),
        cfg,
        group_defaults("fetch"),
        group_defaults("store"),
        out,
        cache,
        executor=LocalExecutor(2),
    )


def test_lila_from_the_azure_mirror_with_a_sas_token(standin_root, mirror, monkeypatch, tmp_path):
    token = sas_token()
    monkeypatch.setenv("LILA_SAS", token)
    # The index is on another origin (as lila.science is): it must never see the token.
    with LilaStandin(standin_root, metadata_base=mirror, images_base=mirror) as index:
        rows, metrics = azure_fetch(index, mirror, tmp_path / "out", tmp_path / "cache")
        seen = list(index.seen)
    assert metrics["failed"] == metrics["missing"] == metrics["corrupt"] == 0
    assert metrics["ok"] > 0
    assert all(urlsplit(r.url).netloc == urlsplit(mirror).netloc for r in rows)
    signature = token.split("sig=")[1].split("&")[0]
    assert seen and not any("sig=" in s.query or signature in str(s.headers) for s in seen)
    # The manifest records the URL without the token, and the container is private: the
    # same URL without the token is refused.
    assert not any("sig=" in r.url for r in rows)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(rows[0].url, timeout=10)
    assert refused.value.code in (403, 404)


def test_a_wrong_sas_token_is_one_clear_error(standin_root, mirror, monkeypatch, tmp_path):
    import base64

    monkeypatch.setenv("LILA_SAS", sas_token(key=base64.b64encode(b"x" * 64).decode()))
    with (
        LilaStandin(standin_root, metadata_base=mirror, images_base=mirror) as index,
        pytest.raises(StageError, match="LILA_SAS"),
    ):
        azure_fetch(index, mirror, tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "out").exists()
