"""Where a secret goes: only to its own origins, only over https (or loopback), never onward."""

from __future__ import annotations

import json
import ssl

import pytest

from stages.core.errors import ConfigError, StageError
from stages.core.executor import LocalExecutor
from stages.core.origins import origin_of, parse_origins
from stages.fetch import fetch
from stages.net.credentials import Credential, Credentials, from_env
from stages.net.download import CredentialRejected, Downloader
from stages.pipeline.compose import group_defaults
from stages.sources.lila import SOURCE as LILA
from standins.lila import LilaStandin
from tests.conftest import SECRET, SIG, lila_conf


def leaked(server) -> list[str]:
    """Return the requests of a server that carried the secret anywhere."""
    return [
        s.path
        for s in server.seen
        if SIG in s.query or any(SIG in v or "Token" in v for v in s.headers.values())
    ]


def images(standin_root) -> list[str]:
    files = json.loads((standin_root / "_datasets.json").read_text())[0]["files"]
    return sorted(r for r in files if r.endswith(".jpg"))


# ---------------------------------------------------------------- the rules, one by one


def test_a_query_credential_joins_an_existing_query_with_ampersand():
    cred = Credential(parse_origins(["https://blob.example"], "t"), value=SECRET, query=True)
    creds = Credentials([cred])
    assert creds.apply("https://blob.example/a.jpg") == (f"https://blob.example/a.jpg?{SECRET}", [])
    url, _ = creds.apply("https://blob.example/m.zip?v=1.14#frag")
    assert url == f"https://blob.example/m.zip?v=1.14&{SECRET}"
    # Another host, another port, another scheme: nothing is attached.
    for other in (
        "https://other.example/a.jpg",
        "https://blob.example:8443/a.jpg",
        "http://blob.example/a.jpg",
    ):
        assert creds.apply(other) == (other, [])


def test_a_header_credential_goes_to_its_origin_only():
    origin = parse_origins(["https://tator.example"], "t")
    creds = Credentials([Credential(origin, header="Authorization", value="Token abc")])
    assert creds.apply("https://tator.example/rest/Medias/1")[1] == ["Authorization: Token abc"]
    assert creds.apply("https://s3.example/bucket/frame.jpg")[1] == []
    assert "abc" not in repr(creds) and "abc" not in repr(creds.creds[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(header="Authorization", value="Token abc\r\nX-Evil: 1"), "line break"),
        (dict(header="X-Api-Key", value="k\ney"), "line break"),
        (dict(header="Bad Name", value="k"), "line break"),
        (dict(value="sig=a\r\nb", query=True), "line break"),
        (dict(header="Authorization", value="Token caf\u00e9"), "non-ASCII"),
    ],
)
def test_header_injection_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Credential(parse_origins(["https://h.example"], "t"), **kwargs)


def test_a_credential_never_goes_over_plain_http_except_to_loopback(monkeypatch):
    with pytest.raises(ValueError, match="https origins only"):
        Credential(frozenset({origin_of("http://blob.example")}), value="sig=x", query=True)
    Credential(frozenset({origin_of("http://127.0.0.1:8765")}), value="sig=x", query=True)
    monkeypatch.setenv("T_SECRET", "sig=x")
    with pytest.raises(ConfigError, match="https origins only"):
        from_env("T_SECRET", ["http://lila.science"], "sources.x")
    with pytest.raises(ConfigError, match="scheme://host"):
        from_env("T_SECRET", ["https://lila.science/path"], "sources.x")
    with pytest.raises(ConfigError, match="origins it belongs to"):
        from_env("T_SECRET", [], "sources.x")
    with pytest.raises(ConfigError, match="T_UNSET, which is not set"):
        from_env("T_UNSET", ["https://lila.science"], "sources.x")


# ---------------------------------------------------------------- a whole fetch, four origins


def lila_with_token(index, origins, **kw):
    return lila_conf(
        ["mule deer", "cougar", "wild turkey", "california quail", "empty"],
        index_url=index.index_url,
        dataset="NACTI-demo",
        sas_token_env="TEST_SAS_TOKEN",
        sas_token_origins=origins,
        **kw,
    )


def test_the_sas_token_goes_to_its_origins_and_nowhere_else(
    four_origins, standin_root, tmp_path, monkeypatch
):
    index, meta, imgs, elsewhere = four_origins
    monkeypatch.setenv("TEST_SAS_TOKEN", SECRET)
    moved = images(standin_root)[0]
    imgs.faults.add(moved, [("redirect", f"{elsewhere.url}/gcp/{moved}")])
    cfg = lila_with_token(index, [meta.url, imgs.url])
    fetch_cfg = group_defaults("fetch", workers=4)
    rows, metrics = fetch(
        LILA,
        cfg,
        fetch_cfg,
        group_defaults("store"),
        tmp_path / "out",
        tmp_path / "cache",
        executor=LocalExecutor(2),
    )
    assert metrics["ok"] == metrics["items"] > 10 and metrics["failed"] == 0
    # The index host and the redirect target never saw the token, in the query or a header.
    assert index.seen and leaked(index) == []
    assert elsewhere.requests[f"/gcp/{moved}"] == 1 and leaked(elsewhere) == []
    # Every request to the two credentialed origins carried it (they refuse requests without).
    assert meta.seen and all(SIG in s.query for s in meta.seen)
    assert imgs.seen and all(SIG in s.query for s in imgs.seen)
    # The URLs recorded in the manifest and ledger are the bare ones.
    assert not any(SIG in r.url for r in rows)


def test_a_rejected_credential_stops_the_stage_and_writes_nothing(
    four_origins, tmp_path, monkeypatch
):
    index, meta, imgs, _ = four_origins
    monkeypatch.setenv("TEST_SAS_TOKEN", "sv=2034-01-01&sig=wrong")
    cfg = lila_with_token(index, [meta.url, imgs.url])
    with pytest.raises(CredentialRejected, match="answered http 403 to the credential from") as err:
        fetch(
            LILA,
            cfg,
            group_defaults("fetch", workers=4),
            group_defaults("store"),
            tmp_path / "out",
            tmp_path / "cache",
            executor=LocalExecutor(2),
        )
    assert isinstance(err.value, StageError) and err.value.exit_code == 2
    assert "TEST_SAS_TOKEN" in str(err.value) and "wrong" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_403_from_an_origin_without_our_credential_is_an_items_outcome(tmp_path, standin_root):
    with LilaStandin(standin_root, token=SECRET) as srv:
        dl = Downloader(group_defaults("fetch"), tmp_path / "cache", executor=LocalExecutor(2))
        rel = images(standin_root)[0]
        res = dl.fetch(f"{srv.url}/gcp/{rel}")
        assert (res.status, res.reason) == ("failed", "http 403")
        dl.close()


# ---------------------------------------------------------------- over TLS


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A throwaway CA, a server context for 127.0.0.1, and the CA file for the client."""
    import trustme

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ctx, path


def test_a_header_goes_over_tls_and_an_https_to_http_redirect_is_refused(
    tls, standin_root, tmp_path, monkeypatch
):
    ctx, ca_file = tls
    monkeypatch.setenv("CURL_CA_BUNDLE", str(ca_file))
    rel = images(standin_root)[0]
    with (
        LilaStandin(standin_root, tls=ctx) as secure,
        LilaStandin(standin_root, host="127.0.0.2") as plain,
    ):
        assert secure.url.startswith("https://127.0.0.1:")
        cred = Credential(
            frozenset({origin_of(secure.url)}), header="Authorization", value="Token t"
        )
        dl = Downloader(
            group_defaults("fetch"),
            tmp_path / "cache",
            credentials=Credentials([cred]),
            executor=LocalExecutor(2),
        )
        assert dl.fetch(f"{secure.url}/gcp/{rel}").status == "ok"
        assert secure.seen[-1].headers.get("Authorization") == "Token t"
        secure.faults.add(rel, [("redirect", f"{plain.url}/gcp/{rel}")])
        res = dl.fetch(f"{secure.url}/gcp/{rel}", refresh=True)
        assert (res.status, res.reason) == ("failed", "redirect from https to http refused")
        assert plain.seen == []
        dl.close()
