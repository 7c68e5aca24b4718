"""The download route serves artifacts written by jupyter_modelsave, and nothing else.

``/modelsave/download/<path>`` is the sidebar's "Download" of a written artifact. It serves a
file or folder below the server's root only when a jupyter_modelsave manifest ``<path>.json``
sits beside it and describes it (a file: the manifest's sha256; a folder: the manifest's file
list), or that manifest itself; hidden files (any path component starting with '.') only when
``ContentsManager.allow_hidden`` is on, as Jupyter's own ``/files/`` and ``/api/contents/``.
Everything else is refused before a byte is sent, on GET, HEAD and Range requests alike.

The artifacts are real ones (``jms.stage(...).write``): a safetensors file and a sharded
safetensors folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import jupyter_modelsave as jms
from jupyter_modelsave import routes as jr

from .. import models
from .test_server import login_cookie

SECRET = b"TOP-SECRET-CONTENT"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """A file artifact and a folder artifact, each with its manifest, written once."""
    folder = tmp_path_factory.mktemp("written")
    model = models.mlp()
    file_artifact = jms.stage(model, torch.randn(2, 8), format="safetensors").write(folder)
    staged = jms.stage(model, format="safetensors", max_shard_size=200)
    folder_artifact = staged.write(folder)
    assert folder_artifact.is_dir() and len(list(folder_artifact.iterdir())) > 2
    return {"file": file_artifact, "folder": folder_artifact}


@pytest.fixture
def root(jp_serverapp, jp_root_dir: Path, written: dict[str, Path]) -> Path:
    """The server's root with both artifacts in ``exports/`` and files that are not artifacts."""
    exports = jp_root_dir / "exports"
    exports.mkdir()
    for path in written.values():
        copy = shutil.copytree if path.is_dir() else shutil.copy2
        copy(path, exports / path.name)
        shutil.copy2(f"{path}.json", exports / f"{path.name}.json")
    (jp_root_dir / ".hidden_secret.txt").write_bytes(SECRET)
    (jp_root_dir / ".jupyter").mkdir()
    (jp_root_dir / ".jupyter" / "jupyter_server_config.json").write_bytes(SECRET)
    (jp_root_dir / "notes").mkdir()
    (jp_root_dir / "notes" / "a.txt").write_bytes(SECRET)
    return jp_root_dir


def names(written: dict[str, Path]) -> tuple[str, str]:
    return written["file"].name, written["folder"].name


async def fetch(client, base_url: str, path: str, method: str = "GET", **kwargs: Any):
    """An authenticated request with the path exactly as written; errors returned, not raised."""
    return await client.fetch(
        f"{base_url}{jr.NAMESPACE}/download/{path}",
        method=method,
        raise_error=False,
        follow_redirects=False,
        **kwargs,
    )


async def all_refused(http_server_client, jp_base_url, jp_auth_header, path: str) -> set[int]:
    """GET, HEAD and a Range GET of ``path``: the status codes; asserts no secret byte is sent."""
    codes = set()
    for method, extra in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=0-9"})):
        headers = {**jp_auth_header, **extra}
        response = await fetch(http_server_client, jp_base_url, path, method, headers=headers)
        codes.add(response.code)
        assert SECRET not in response.body and SECRET[:10] not in response.body, (path, method)
        if method == "GET":
            assert json.loads(response.body)["message"], path  # a JSON reason, not a page
    return codes


# --- what is served ---


async def test_written_artifacts_and_their_manifests_are_served(
    root, written, http_server_client, jp_base_url, jp_auth_header
) -> None:
    file_name, folder_name = names(written)
    # When the file artifact is downloaded, whole and by range
    whole = await fetch(
        http_server_client, jp_base_url, f"exports/{file_name}", headers=jp_auth_header
    )
    part = await fetch(
        http_server_client,
        jp_base_url,
        f"exports/{file_name}",
        headers={**jp_auth_header, "Range": "bytes=8-"},
    )
    # Then it is the written bytes, announced with their sha256 (the manifest's)
    data = written["file"].read_bytes()
    manifest = json.loads(Path(f"{written['file']}.json").read_text())
    assert (whole.code, whole.body) == (200, data)
    assert (
        whole.headers["X-Content-SHA256"] == manifest["sha256"] == hashlib.sha256(data).hexdigest()
    )
    assert (part.code, part.body) == (206, data[8:])
    # And the folder artifact comes as one zip of exactly its files
    response = await fetch(
        http_server_client, jp_base_url, f"exports/{folder_name}", headers=jp_auth_header
    )
    assert response.code == 200
    with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
        unpacked = {n: archive.read(n) for n in archive.namelist()}
    expected = {
        p.relative_to(written["folder"]).as_posix(): p.read_bytes()
        for p in written["folder"].rglob("*")
        if p.is_file()
    }
    assert unpacked == expected
    # And each manifest is served too
    for name in (file_name, folder_name):
        response = await fetch(
            http_server_client, jp_base_url, f"exports/{name}.json", headers=jp_auth_header
        )
        assert response.code == 200
        assert json.loads(response.body)["producer"] == "jupyter_modelsave"


async def test_another_site_cannot_read_an_artifact_with_your_cookie(
    root, written, http_server_client, jp_base_url, jp_auth_header
) -> None:
    # Given your browser session (the login cookie a link from another site carries)
    cookie = await login_cookie(http_server_client, jp_base_url, jp_auth_header)
    path = f"exports/{names(written)[0]}"
    # When a link is followed (a navigation: no Origin header), the browser gets the artifact
    link = await fetch(http_server_client, jp_base_url, path, headers={"Cookie": cookie})
    assert link.code == 200
    # When another site's script asks for it (its request carries that site's Origin)
    headers = {"Cookie": cookie, "Origin": "https://elsewhere.example"}
    script = await fetch(http_server_client, jp_base_url, path, headers=headers)
    # Then Jupyter's origin check refuses it, and no answer carries a CORS header that would let
    # that site read the bytes
    assert script.code == 404 and written["file"].read_bytes() not in script.body
    for response in (link, script):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


# --- what is refused ---


def _plant(root: Path, written: dict[str, Path], case: str) -> str:
    """Set up one file that is not a servable artifact; return its path below the root."""
    file_name, folder_name = names(written)
    exports = root / "exports"
    real_manifest = (exports / f"{file_name}.json").read_text()
    if case == "no manifest":
        (exports / "model.onnx").write_bytes(SECRET)
        return "exports/model.onnx"
    if case == "plain json":
        (root / "notes" / "config.json").write_bytes(b'{"token": "' + SECRET + b'"}')
        return "notes/config.json"
    if case == "another producer":
        (exports / "m.onnx").write_bytes(SECRET)
        (exports / "m.onnx.json").write_text(json.dumps({"producer": "someone else"}))
        return "exports/m.onnx"
    if case == "a copied manifest":  # a real manifest of ours, beside another file
        (exports / "secret.bin").write_bytes(SECRET)
        (exports / "secret.bin.json").write_text(real_manifest)
        return "exports/secret.bin"
    if case == "a forged manifest naming another file":
        (exports / "s.bin").write_bytes(SECRET)
        forged = {**json.loads(real_manifest), "files": {"s.bin": "0" * 64}}
        (exports / "s.bin.json").write_text(json.dumps(forged))
        return "exports/s.bin"
    if case == "manifest of a manifest":  # <x>.json served as the artifact of <x>.json.json
        (exports / "t.bin").write_bytes(SECRET)
        (exports / "t.bin.json").write_bytes(SECRET)
        (exports / "t.bin.json.json").write_text(real_manifest)
        return "exports/t.bin.json"
    if case == "the copied manifest itself":
        (exports / "u.bin").write_bytes(SECRET)
        (exports / "u.bin.json").write_text(
            real_manifest.replace("{", '{"x": "' + SECRET.decode() + '", ', 1)
        )
        return "exports/u.bin.json"
    if case.startswith("broken manifest"):
        (exports / "b.bin").write_bytes(SECRET)
        body = {
            "broken manifest: not json": b"{nope",
            "broken manifest: a list": b'["producer", "jupyter_modelsave"]',
            "broken manifest: deep": b"[" * 100_000 + b"]" * 100_000,
            "broken manifest: huge": b'{"producer": "jupyter_modelsave", "pad": "'
            + b"x" * (17 << 20)
            + b'"}',
            "broken manifest: binary": b"\xff\xfe\x00{",
        }[case]
        (exports / "b.bin.json").write_bytes(body)
        return "exports/b.bin"
    if case == "manifest linked from outside":
        outside = root.parent / "outside.json"
        outside.write_text(real_manifest)
        (exports / "l.bin").write_bytes(SECRET)
        os.symlink(outside, exports / "l.bin.json")
        return "exports/l.bin"
    if case == "folder: a file added":
        (exports / folder_name / "extra.txt").write_bytes(SECRET)
        return f"exports/{folder_name}"
    if case == "folder: without manifest":
        (root / "notes" / "model.onnx").mkdir()
        (root / "notes" / "model.onnx" / "x.bin").write_bytes(SECRET)
        return "notes/model.onnx"
    if case == "the exports folder":
        (exports / "z.txt").write_bytes(SECRET)
        return "exports"
    raise AssertionError(case)


NOT_ARTIFACTS = [
    "no manifest",
    "plain json",
    "another producer",
    "a copied manifest",
    "a forged manifest naming another file",
    "manifest of a manifest",
    "the copied manifest itself",
    "broken manifest: not json",
    "broken manifest: a list",
    "broken manifest: deep",
    "broken manifest: huge",
    "broken manifest: binary",
    "manifest linked from outside",
    "folder: a file added",
    "folder: without manifest",
    "the exports folder",
]


@pytest.mark.parametrize("case", NOT_ARTIFACTS)
async def test_a_file_that_is_not_a_written_artifact_is_refused(
    root, written, http_server_client, jp_base_url, jp_auth_header, case
) -> None:
    # Given a file below the root that this extension did not write (or no longer matches)
    path = _plant(root, written, case)
    # When it is asked for, Then it is refused on GET, HEAD and Range alike, nothing sent
    codes = await all_refused(http_server_client, jp_base_url, jp_auth_header, path)
    assert codes <= {403, 404, 409}, codes


@pytest.mark.parametrize(
    "path", [".hidden_secret.txt", ".jupyter/jupyter_server_config.json", "notes/a.txt"]
)
async def test_the_reported_files_are_refused(
    root, http_server_client, jp_base_url, jp_auth_header, path
) -> None:
    codes = await all_refused(http_server_client, jp_base_url, jp_auth_header, path)
    assert codes <= {403, 404}, codes


async def test_a_changed_artifact_is_refused_as_not_matching_its_manifest(
    root, written, http_server_client, jp_base_url, jp_auth_header
) -> None:
    # Given a written file artifact whose bytes changed after it was written
    file_name, _ = names(written)
    (root / "exports" / file_name).write_bytes(SECRET)
    # Then it is refused with 409 and the reason
    response = await fetch(
        http_server_client, jp_base_url, f"exports/{file_name}", headers=jp_auth_header
    )
    assert response.code == 409
    assert "manifest" in json.loads(response.body)["message"]
    assert SECRET not in response.body


# --- hidden files follow ContentsManager.allow_hidden ---


def _hide(root: Path, written: dict[str, Path]) -> list[str]:
    """Real artifacts in hidden places; return their paths below the root."""
    file_name, _ = names(written)
    hidden = root / ".cache"
    hidden.mkdir()
    for name in (file_name, f"{file_name}.json"):
        shutil.copy2(root / "exports" / name, hidden / name)
    shutil.copy2(root / "exports" / file_name, root / "exports" / f".{file_name}")
    shutil.copy2(root / "exports" / f"{file_name}.json", root / "exports" / f".{file_name}.json")
    os.symlink(hidden / file_name, root / "exports" / "link.safetensors")
    shutil.copy2(root / "exports" / f"{file_name}.json", root / "exports" / "link.safetensors.json")
    return [
        f".cache/{file_name}",
        f".cache/{file_name}.json",
        f"exports/.{file_name}",
        "exports/link.safetensors",  # a visible name for a file in a hidden folder
    ]


@pytest.mark.parametrize("allow_hidden", [False, True])
async def test_hidden_artifacts_follow_allow_hidden(
    root, written, jp_serverapp, http_server_client, jp_base_url, jp_auth_header, allow_hidden
) -> None:
    # Given real artifacts in a hidden folder, under a hidden name, and behind a visible link
    paths = _hide(root, written)
    jp_serverapp.contents_manager.allow_hidden = allow_hidden
    for path in paths:
        response = await fetch(http_server_client, jp_base_url, path, headers=jp_auth_header)
        if allow_hidden:
            # Then with allow_hidden they are served, as Jupyter's /files/ would
            assert response.code == 200, (path, response.body)
        else:
            # Then without it they are 404, as for a file that does not exist
            assert response.code == 404, (path, response.code)
            assert "does not exist" in json.loads(response.body)["message"]


# --- odd paths: a clear refusal, never a server error ---


async def test_odd_paths_are_refused_without_a_server_error(
    root, written, http_server_client, jp_base_url, jp_auth_header
) -> None:
    file_name, _ = names(written)
    os.symlink(root / "loop_a", root / "loop_b")
    os.symlink(root / "loop_b", root / "loop_a")
    (root / "exports" / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "exports" / "fifo")
    odd = [
        "x" * 300,  # a name longer than the file system allows
        "/".join(["d"] * 3000),  # a path longer than PATH_MAX
        "loop_a",  # a symlink loop
        "loop_a/x",
        "exports/fifo",
        f"EXPORTS/{file_name.upper()}",  # another spelling (case-sensitive here: not found)
        f"exports/{file_name}%00",
        f"exports/{file_name}%2F..%2F..%2F.hidden_secret.txt",
        "exports/%2e%2e/.hidden_secret.txt",
        "exports/%c0%ae%c0%ae/.hidden_secret.txt",  # overlong UTF-8 dots
        "exports/%ff",
        "exports/%ED%A0%80",  # a lone surrogate
    ]
    for path in odd:
        response = await fetch(http_server_client, jp_base_url, path, headers=jp_auth_header)
        assert response.code in (400, 403, 404, 414), (path[:80], response.code, response.body)
        assert SECRET not in response.body
