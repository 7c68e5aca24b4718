"""The server extension's file routes: staged exports, downloads, Netron's viewer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

from ._manifests import write_manifest

STAGING_ID = "0123456789abcdef0123456789abcdef"
PAYLOAD = bytes(range(256)) * 40  # 10 KiB with distinct neighbouring bytes


@pytest.fixture
def staged(staging_dir: Path) -> Path:
    """A staged export as the kernel side publishes it."""
    folder = staging_dir / STAGING_ID
    folder.mkdir()
    (folder / "net.onnx").write_bytes(PAYLOAD)
    index = {"artifact": "net.onnx", "graph": "net.onnx", "pid": os.getpid()}
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture
def written(jp_root_dir: Path) -> Path:
    path = jp_root_dir / "exports" / "net_v1.0.0_abc.onnx"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    write_manifest(path)
    return path


async def fetch_raw(http_server_client, jp_base_url, jp_auth_header, path, **kwargs):
    """A request with the path exactly as written (jp_fetch would escape `%`)."""
    kwargs.setdefault("headers", dict(jp_auth_header))
    return await http_server_client.fetch(
        f"{jp_base_url}modelsave/{path}", raise_error=False, follow_redirects=False, **kwargs
    )


@pytest.mark.parametrize(
    "path",
    [
        "config",
        f"staged/{STAGING_ID}/artifact",
        f"staged/{STAGING_ID}/graph",
        "download/exports/net_v1.0.0_abc.onnx",
        "netron/browser.js",
    ],
)
async def test_every_route_needs_authentication(
    http_server_client, jp_base_url, staged, written, path
):
    # When a route is called without credentials
    response = await fetch_raw(http_server_client, jp_base_url, {}, path, headers={})
    # Then it is refused (pages too: no redirect to the login page)
    assert response.code == 403
    assert PAYLOAD not in response.body


async def test_netron_page_without_credentials_is_refused(http_server_client, jp_base_url):
    # The viewer loads inside the sidebar's iframe: a 403, not a redirect to a login page
    response = await fetch_raw(http_server_client, jp_base_url, {}, "netron/", headers={})
    assert response.code == 403
    assert b"netron" not in response.body.lower()


async def test_config_names_the_staging_folder(jp_fetch, staging_dir, jp_root_dir):
    response = await jp_fetch("modelsave", "config")
    body = json.loads(response.body)
    assert body["staging_dir"] == str(staging_dir)
    assert Path(body["root_dir"]).resolve() == jp_root_dir.resolve()


async def test_staged_download_has_length_name_and_sha256(jp_fetch, staged):
    # When the staged artifact is downloaded
    response = await jp_fetch("modelsave", "staged", STAGING_ID, "artifact")
    # Then it is the bytes, announced with their length, a file name and their sha256
    assert response.body == PAYLOAD
    assert response.headers["Content-Length"] == str(len(PAYLOAD))
    assert response.headers["Content-Disposition"] == "attachment; filename*=utf-8''net.onnx"
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert response.headers["Accept-Ranges"] == "bytes"


async def test_graph_is_served_inline_for_netron(jp_fetch, staged):
    response = await jp_fetch("modelsave", "staged", STAGING_ID, "graph")
    assert response.body == PAYLOAD
    assert response.headers["Content-Disposition"] == "inline"


async def test_a_range_request_resumes_a_download(jp_fetch, written):
    # Given a download interrupted after 1000 bytes
    # When the rest is asked for with a Range header
    response = await jp_fetch(
        "modelsave", "download", "exports", written.name, headers={"Range": "bytes=1000-"}
    )
    # Then the server answers 206 with exactly the missing bytes and the whole file's sha256
    assert response.code == 206
    assert response.body == PAYLOAD[1000:]
    assert response.headers["Content-Range"] == f"bytes 1000-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
    assert response.headers["Content-Length"] == str(len(PAYLOAD) - 1000)
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(PAYLOAD).hexdigest()


async def test_a_middle_range(jp_fetch, written):
    response = await jp_fetch(
        "modelsave", "download", "exports", written.name, headers={"Range": "bytes=10-19"}
    )
    assert response.code == 206
    assert response.body == PAYLOAD[10:20]


@pytest.mark.parametrize(
    "path",
    [
        "download/..%2Fsecret.txt",
        "download/exports%2F..%2F..%2Fsecret.txt",
        "download/%2Fetc%2Fpasswd",
        "download/escape.txt",  # a symlink inside the root that points outside
    ],
)
async def test_paths_outside_the_root_are_refused(
    http_server_client, jp_base_url, jp_auth_header, jp_root_dir, tmp_path, path
):
    # Given a secret next to (not inside) the root, and a symlink to it inside the root
    secret = jp_root_dir.parent / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, jp_root_dir / "escape.txt")
    # When a download path tries to leave the root
    response = await fetch_raw(http_server_client, jp_base_url, jp_auth_header, path)
    # Then it is refused with a JSON reason, and nothing of the file is sent
    assert response.code in (403, 404), response.body
    assert b"secret" not in response.body.replace(b"secret.txt", b"")
    if response.code == 403:
        assert "outside" in json.loads(response.body)["message"]


async def test_unknown_staging_id_is_a_json_404(jp_fetch, staging_dir):
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "staged", "f" * 32, "artifact")
    assert err.value.code == 404
    body = json.loads(err.value.response.body)
    assert "stage it again" in body["message"]


async def test_a_staged_index_cannot_point_outside_its_folder(jp_fetch, staged):
    (staged / "index.json").write_text(json.dumps({"artifact": "../../etc/passwd"}))
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "staged", STAGING_ID, "artifact")
    assert err.value.code == 403


async def test_a_folder_that_is_not_an_artifact_cannot_be_downloaded(jp_fetch, written):
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "download", "exports")
    assert err.value.code == 403
    assert "not an artifact" in json.loads(err.value.response.body)["message"]


FOLDER_FILES = {"model.onnx": PAYLOAD[:999], "model.onnx.data": PAYLOAD, "sub/extra.bin": b""}


def _fill(folder: Path) -> Path:
    for name, data in FOLDER_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def _unzipped(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None  # every member's CRC checks out
        return {name: archive.read(name) for name in archive.namelist()}


async def test_a_written_folder_artifact_downloads_as_one_zip(jp_fetch, jp_root_dir):
    # Given a folder artifact (ONNX with external data) written with its manifest
    artifact = _fill(jp_root_dir / "exports" / "big_v1.0.0_abc.onnx")
    write_manifest(artifact)
    # When it is downloaded
    response = await jp_fetch("modelsave", "download", "exports", artifact.name)
    # Then it arrives as one zip holding exactly its files
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"].endswith("big_v1.0.0_abc.onnx.zip")
    assert _unzipped(response.body) == FOLDER_FILES


async def test_a_staged_folder_artifact_downloads_as_one_zip(jp_fetch, staging_dir):
    # Given a staged folder artifact, published as the kernel side does
    folder = staging_dir / STAGING_ID
    _fill(folder / "big.onnx")
    (folder / "index.json").write_text(json.dumps({"artifact": "big.onnx", "graph": None}))
    # When it is downloaded
    response = await jp_fetch("modelsave", "staged", STAGING_ID, "artifact")
    # Then it is one zip of its files
    assert _unzipped(response.body) == FOLDER_FILES


async def test_a_folder_artifact_holding_a_link_is_refused(jp_fetch, jp_root_dir, tmp_path):
    # Given a folder artifact in which a file is a symlink to a file outside the root
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    artifact = _fill(jp_root_dir / "exports" / "big_v1.0.0_abc.onnx")
    (artifact / "leak.bin").symlink_to(secret)
    write_manifest(artifact)
    # When it is downloaded, Then nothing is sent
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "download", "exports", artifact.name)
    assert err.value.code == 403
    assert b"secret" not in (err.value.response.body or b"")


async def test_netron_page_is_patched(jp_fetch, jp_base_url):
    # When the viewer page is asked for
    response = await jp_fetch("modelsave", "netron/")
    html = response.body.decode()
    # Then it is Netron's page with version 0.0.0 (no analytics), no date (no expiry), and a
    # consent cookie for the viewer's path (no prompt, no IP look-up)
    assert '<meta name="version" content="0.0.0">' in html
    assert 'name="date"' not in html
    assert 'id="logo-github"' in html
    cookies = response.headers.get_list("Set-Cookie")
    assert f"consent=jupyter_modelsave; Path={jp_base_url}modelsave/netron/; SameSite=Strict" in (
        cookies
    )


async def test_netron_assets_are_served_but_not_its_python(jp_fetch):
    response = await jp_fetch("modelsave", "netron", "browser.js")
    assert b"class" in response.body
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "netron", "server.py")
    assert err.value.code == 404


# --- compressed transfer (issue 16.7) ---


def _bf16_weights(n: int) -> bytes:
    """bf16 weights of a random-init layer: their exponent bytes repeat, gzip shrinks them."""
    import torch

    torch.manual_seed(0)
    return (
        torch.empty(n).uniform_(-0.05, 0.05).to(torch.bfloat16).view(torch.uint8).numpy().tobytes()
    )


NOISE = os.urandom(1 << 20)  # stands for random fp32 weights: gzip cannot shrink it
WEIGHTS = _bf16_weights(1 << 19)  # 1 MiB


@pytest.fixture
def weights(jp_root_dir: Path) -> dict[str, Path]:
    folder = jp_root_dir / "exports"
    folder.mkdir(exist_ok=True)
    files = {"bf16": folder / "bf16.safetensors", "noise": folder / "fp32.safetensors"}
    files["bf16"].write_bytes(WEIGHTS)
    files["noise"].write_bytes(NOISE)
    for path in files.values():  # the download route serves written artifacts only
        write_manifest(path)
    return files


async def _download(http_server_client, jp_base_url, jp_auth_header, name, **headers):
    return await http_server_client.fetch(
        f"{jp_base_url}modelsave/download/exports/{name}",
        headers={**jp_auth_header, **headers},
        decompress_response=False,  # see the bytes on the wire
        raise_error=False,
    )


@pytest.mark.parametrize("chunk", [1 << 20, 1 << 10], ids=["1 MiB reads", "1 KiB reads"])
async def test_compressible_weights_are_sent_gzipped_to_a_browser_that_accepts_it(
    http_server_client, jp_base_url, jp_auth_header, weights, monkeypatch, chunk
):
    # (small reads: deflate keeps some back and answers b"", which must not end the stream)
    monkeypatch.setattr("jupyter_modelsave.routes.GZIP_CHUNK", chunk)
    # When bf16 weights are downloaded by a browser that accepts gzip
    response = await _download(http_server_client, jp_base_url, jp_auth_header,
                               "bf16.safetensors", **{"Accept-Encoding": "gzip, deflate, br"})  # fmt: skip
    # Then fewer bytes cross the wire, and they unpack to the file (whose sha256 is announced)
    assert response.code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert len(response.body) < 0.9 * len(WEIGHTS)
    assert gzip.decompress(response.body) == WEIGHTS
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert response.headers["Content-Disposition"].endswith("bf16.safetensors")


@pytest.mark.parametrize(
    ("name", "accept"),
    [
        ("fp32.safetensors", "gzip"),  # incompressible: sent as it is
        ("bf16.safetensors", ""),  # the client does not accept gzip
        ("bf16.safetensors", "gzip;q=0, identity"),  # refuses it explicitly
        ("bf16.safetensors", "br"),  # accepts only another encoding
    ],
)
async def test_otherwise_the_file_is_sent_as_it_is_with_its_length(
    http_server_client, jp_base_url, jp_auth_header, weights, name, accept
):
    headers = {"Accept-Encoding": accept} if accept else {}
    response = await _download(http_server_client, jp_base_url, jp_auth_header, name, **headers)
    expected = NOISE if name.startswith("fp32") else WEIGHTS
    assert response.code == 200 and "Content-Encoding" not in response.headers
    assert response.body == expected
    assert response.headers["Content-Length"] == str(len(expected))


async def test_a_range_resume_of_a_compressible_file_gets_its_own_bytes(
    http_server_client, jp_base_url, jp_auth_header, weights
):
    # Given a browser that accepts gzip resumes a download after 1000 bytes
    headers = {"Accept-Encoding": "gzip", "Range": "bytes=1000-"}
    response = await _download(
        http_server_client, jp_base_url, jp_auth_header, "bf16.safetensors", **headers
    )
    # Then it gets 206 with exactly the missing bytes, not encoded
    assert response.code == 206 and "Content-Encoding" not in response.headers
    assert response.body == WEIGHTS[1000:]
    assert response.headers["Content-Range"] == f"bytes 1000-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"


async def test_a_head_request_announces_the_encoding_without_a_body(
    http_server_client, jp_base_url, jp_auth_header, weights
):
    response = await http_server_client.fetch(
        f"{jp_base_url}modelsave/download/exports/bf16.safetensors", method="HEAD",
        headers={**jp_auth_header, "Accept-Encoding": "gzip"}, decompress_response=False,
    )  # fmt: skip
    assert response.code == 200 and response.headers["Content-Encoding"] == "gzip"
    assert response.body == b""


async def test_a_staged_export_is_compressed_too(
    http_server_client, jp_base_url, jp_auth_header, staging_dir
):
    folder = staging_dir / STAGING_ID
    folder.mkdir()
    (folder / "net.safetensors").write_bytes(WEIGHTS)
    (folder / "index.json").write_text(
        json.dumps({"artifact": "net.safetensors", "pid": os.getpid()})
    )
    response = await http_server_client.fetch(
        f"{jp_base_url}modelsave/staged/{STAGING_ID}/artifact",
        headers={**jp_auth_header, "Accept-Encoding": "gzip"}, decompress_response=False,
    )  # fmt: skip
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.body) == WEIGHTS


async def test_gzip_is_off_when_the_server_is_configured_so(
    http_server_client, jp_base_url, jp_auth_header, jp_web_app, weights
):
    # Given c.ModelSave.compress_downloads = False (a network faster than a core compresses)
    jp_web_app.settings["jupyter_modelsave"].compress_downloads = False
    response = await _download(http_server_client, jp_base_url, jp_auth_header,
                               "bf16.safetensors", **{"Accept-Encoding": "gzip"})  # fmt: skip
    assert "Content-Encoding" not in response.headers and response.body == WEIGHTS
