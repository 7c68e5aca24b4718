"""The server extension lets no one in and serves nothing outside its folders.

Every check is parametrised over the routes that ``setup_route_handlers`` registers (enumerated
by running it against a recording app), so a new route is tested the moment it is added; a route
without a sample URL in ``SAMPLES`` fails ``test_every_route_has_a_sample``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from jupyter_modelsave import _paths
from jupyter_modelsave import routes as jr

from .._manifests import write_manifest

SID = "0123456789abcdef0123456789abcdef"
PAYLOAD = b"MODEL-BYTES-" * 100
SECRET = b"TOP-SECRET-CONTENT"
READ_VERBS = ("GET", "HEAD")
WRITE_VERBS = ("POST", "PUT", "DELETE", "PATCH")
ALL_VERBS = (*READ_VERBS, *WRITE_VERBS, "OPTIONS")  # every verb tornado routes to a handler
XSRF = "2f3c4b86aa0011"  # any value: tornado compares the _xsrf cookie with the header


class _RecordingApp:
    """Just enough of a tornado Application for ``setup_route_handlers`` to register its routes."""

    def __init__(self, folder: str) -> None:
        config = Config({"ModelSave": {"staging_dir": folder}})
        self.settings: dict[str, Any] = {"base_url": "/", "config": config}
        self.handlers: list[tuple] = []

    def add_handlers(self, host: str, handlers: list[tuple]) -> None:
        self.handlers.extend(handlers)


def registered_routes() -> list[tuple[str, type]]:
    """``(pattern below /modelsave/, handler class)`` for every route the extension registers."""
    folder = tempfile.mkdtemp(prefix="jms-routes-")
    try:
        app = _RecordingApp(folder)
        jr.setup_route_handlers(app)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [(spec[0].removeprefix(f"/{jr.NAMESPACE}/"), spec[1]) for spec in app.handlers]


ROUTES = registered_routes()
ROUTE_IDS = [pattern for pattern, _ in ROUTES]
# One URL per route that the fixtures below make answer 200 when authenticated.
SAMPLES = {
    "health": "health",
    "config": "config",
    "netron/": "netron/",
    "netron/index.html": "netron/index.html",
    rf"netron/({jr.NETRON_ASSET})": "netron/browser.js",
    rf"staged/({_paths.STAGING_ID.pattern[1:-1]})/(artifact|graph)": f"staged/{SID}/artifact",
    "download/(.+)": "download/exports/net.onnx",
}


def sample(pattern: str) -> str:
    assert pattern in SAMPLES, f"route {pattern!r} has no sample URL: add one to SAMPLES"
    return SAMPLES[pattern]


# --- fixtures: a server with a staged export, a written artifact and a secret outside ---


@pytest.fixture
def secret(jp_root_dir: Path) -> Path:
    """A file next to (not inside) the server's root and the staging folder."""
    path = jp_root_dir.parent / "secret.txt"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def files(jp_serverapp, jp_root_dir: Path, staging_dir: Path, secret: Path) -> None:
    """A published staged export, a written artifact, and symlinks that lead outside."""
    folder = staging_dir / SID
    folder.mkdir()
    (folder / "net.onnx").write_bytes(PAYLOAD)
    index = {"artifact": "net.onnx", "graph": "net.onnx", "pid": os.getpid()}
    (folder / "index.json").write_text(json.dumps(index))
    (jp_root_dir / "exports").mkdir()
    (jp_root_dir / "exports" / "net.onnx").write_bytes(PAYLOAD)
    write_manifest(jp_root_dir / "exports" / "net.onnx")
    os.symlink(secret, jp_root_dir / "escape.txt")
    os.symlink(secret.parent, jp_root_dir / "escapedir")


async def request(client, base_url: str, path: str, method: str = "GET", **kwargs: Any):
    """A request with the path exactly as written (no re-escaping), errors returned, not raised."""
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    return await client.fetch(
        f"{base_url}{jr.NAMESPACE}/{path}",
        method=method,
        body=body,
        raise_error=False,
        follow_redirects=False,
        allow_nonstandard_methods=True,
        **kwargs,
    )


async def login_cookie(http_server_client, jp_base_url, jp_auth_header) -> str:
    """The login cookie the server sets on a token-authenticated request (a browser's session)."""
    response = await http_server_client.fetch(f"{jp_base_url}api/status", headers=jp_auth_header)
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    (name,) = [n for n in jar if n.startswith("username-")]
    return f"{name}={jar[name].value}"


# --- the enumeration itself ---


def test_routes_are_enumerated() -> None:
    assert len(ROUTES) >= 7
    assert {cls for _, cls in ROUTES} >= {jr.StagedHandler, jr.DownloadHandler}


@pytest.mark.parametrize("pattern", ROUTE_IDS)
def test_every_route_has_a_sample(pattern: str) -> None:
    assert re.fullmatch(pattern, sample(pattern))


async def test_the_enumeration_is_what_the_server_serves(jp_web_app, jp_base_url) -> None:
    # Given the running server's routing table
    live = set()
    for host_rule in jp_web_app.default_router.rules:
        for rule in getattr(host_rule.target, "rules", []):
            pattern = rule.matcher.regex.pattern.rstrip("$")
            prefix = f"{jp_base_url}{jr.NAMESPACE}/"
            if pattern.startswith(prefix):
                live.add((pattern.removeprefix(prefix), rule.target))
    # Then it holds exactly the routes these tests enumerate
    assert live == set(ROUTES)


# --- authentication and XSRF, every route and verb ---


@pytest.mark.parametrize("pattern", ROUTE_IDS)
async def test_an_authenticated_request_is_served(
    files, http_server_client, jp_base_url, jp_auth_header, pattern
) -> None:
    # The sample URLs work, so the refusals below are about credentials, not about the URL
    response = await request(
        http_server_client, jp_base_url, sample(pattern), headers=jp_auth_header
    )
    assert response.code == 200, response.body
    # And HEAD answers the same headers without the body
    head = await request(
        http_server_client, jp_base_url, sample(pattern), "HEAD", headers=jp_auth_header
    )
    assert (head.code, head.body) == (200, b"")
    assert head.headers.get("Content-Type") == response.headers.get("Content-Type")


@pytest.mark.parametrize("allow_unauthenticated_access", [False, True], ids=["strict", "default"])
@pytest.mark.parametrize("pattern", ROUTE_IDS)
async def test_an_anonymous_request_is_refused(
    files, jp_web_app, http_server_client, jp_base_url, monkeypatch, pattern,
    allow_unauthenticated_access,
) -> None:  # fmt: skip
    # Given a server that refuses unauthenticated access everywhere (strict), or one with
    # Jupyter's default setting, where only @authenticated handlers check credentials
    monkeypatch.setitem(
        jp_web_app.settings, "allow_unauthenticated_access", allow_unauthenticated_access
    )
    answers = {}
    for method in ALL_VERBS:
        # When a route is called with any verb, without a token or a login cookie
        response = await request(http_server_client, jp_base_url, sample(pattern), method)
        answers[method] = response.code
        # Then it sends nothing of the files, nor the viewer page or its scripts
        assert PAYLOAD not in response.body
        assert b"netron" not in response.body.lower()
    # And every verb answers 403 (no 405 that tells which verbs exist, no login redirect)
    assert answers == dict.fromkeys(ALL_VERBS, 403)


@pytest.mark.parametrize("pattern", ROUTE_IDS)
async def test_a_state_changing_request_without_xsrf_is_refused(
    files, http_server_client, jp_base_url, jp_auth_header, pattern
) -> None:
    # Given a browser session (login cookie) but no XSRF token: a cross-site form post
    cookie = await login_cookie(http_server_client, jp_base_url, jp_auth_header)
    for method in WRITE_VERBS:
        response = await request(
            http_server_client, jp_base_url, sample(pattern), method, headers={"Cookie": cookie}
        )
        # Then it is refused before any handler code runs
        assert response.code == 403, method
        assert "xsrf" in response.body.decode().lower(), method


@pytest.mark.parametrize("pattern", ROUTE_IDS)
async def test_no_route_changes_state(
    files, http_server_client, jp_base_url, jp_auth_header, staging_dir, pattern
) -> None:
    # Given a browser session with a valid XSRF token (cookie and header agree)
    cookie = await login_cookie(http_server_client, jp_base_url, jp_auth_header)
    headers = {"Cookie": f"{cookie}; _xsrf={XSRF}", "X-XSRFToken": XSRF}
    for method in WRITE_VERBS:
        # When a state-changing verb is sent
        response = await request(
            http_server_client, jp_base_url, sample(pattern), method, headers=headers
        )
        # Then no route accepts it (the sidebar discards through the kernel, not the server)
        assert response.code == 405, method
    assert (staging_dir / SID / "net.onnx").read_bytes() == PAYLOAD


async def test_the_login_cookie_alone_reads_files(
    files, http_server_client, jp_base_url, jp_auth_header
) -> None:
    # A GET needs no XSRF token (the browser's download links), only the session
    cookie = await login_cookie(http_server_client, jp_base_url, jp_auth_header)
    response = await request(
        http_server_client, jp_base_url, f"staged/{SID}/artifact", headers={"Cookie": cookie}
    )
    assert response.code == 200
    assert response.body == PAYLOAD


# --- path traversal ---

TRAVERSALS = [
    "download/..%2Fsecret.txt",
    "download/%2e%2e%2fsecret.txt",
    "download/%2e%2e/secret.txt",
    "download/%2E%2E%2Fsecret.txt",
    "download/exports%2F..%2F..%2Fsecret.txt",
    "download/exports/%2e%2e/%2e%2e/secret.txt",
    "download/%252e%252e%252fsecret.txt",  # double-encoded: a literal name, not a parent
    "download/..%252Fsecret.txt",
    "download/%2Fetc%2Fpasswd",
    "download//etc/passwd",
    "download/%2F..%2Fsecret.txt",
    "download/..",
    "download/secret.txt%00.onnx",
    "download/exports%00%2F..%2F..%2Fsecret.txt",
    "download/..%5Csecret.txt",
    "download/exports%5C..%5C..%5Csecret.txt",
    "download/escape.txt",  # a symlink inside the root to a file outside
    "download/escapedir/secret.txt",  # a symlink inside the root to a folder outside
    "download/~/secret.txt",
    "staged/..%2F..%2Fsecret.txt/artifact",
    f"staged/{SID}%2F..%2F..%2Fsecret.txt/artifact",
    "netron/..%2F..%2F..%2Fsecret.txt",
    "netron/..%2Fsecret.js",
    "netron/%2e%2e%2fsecret.js",
]


async def test_paths_outside_the_served_folders_are_refused(
    files, http_server_client, jp_base_url, jp_auth_header, jp_root_dir, secret
) -> None:
    # When authenticated requests try to leave the root or the staging folder
    answers = {}
    for path in TRAVERSALS:
        for method in READ_VERBS:
            response = await request(
                http_server_client, jp_base_url, path, method, headers=jp_auth_header
            )
            answers[method, path] = (response.code, SECRET in response.body)
    # Then each is refused (403/404), and nothing of the file outside is ever sent
    wrong = {k: v for k, v in answers.items() if v[0] not in (403, 404) or v[1]}
    assert not wrong
    # And the same file is served once it is inside the root (the requests above were refused
    # for where they lead, not for some unrelated reason)
    shutil.copy(secret, jp_root_dir / "secret.txt")
    write_manifest(jp_root_dir / "secret.txt")
    response = await request(
        http_server_client, jp_base_url, "download/secret.txt", headers=jp_auth_header
    )
    assert response.code == 200 and response.body == SECRET


@pytest.mark.parametrize(
    "index_entry",
    ["../../secret.txt", "../secret.txt", "/etc/passwd", "SECRET_ABS", "link.txt", "a\\..\\b"],
)
async def test_a_staged_index_cannot_lead_outside(
    files, jp_fetch, staging_dir, secret, index_entry
) -> None:
    # Given a published index that names a file outside its folder (or a symlink to one)
    folder = staging_dir / SID
    os.symlink(secret, folder / "link.txt")
    name = str(secret) if index_entry == "SECRET_ABS" else index_entry
    (folder / "index.json").write_text(json.dumps({"artifact": name, "pid": os.getpid()}))
    # When it is fetched, it is refused
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "staged", SID, "artifact")
    assert err.value.code in (403, 404)
    assert SECRET not in (err.value.response.body or b"")


async def test_a_staging_folder_that_is_a_symlink_is_not_served(
    files, jp_fetch, staging_dir, secret
) -> None:
    # Given a staging id whose folder is a symlink to a folder outside, with an index in it
    other = "f" * 32
    (secret.parent / "index.json").write_text(json.dumps({"artifact": "secret.txt"}))
    os.symlink(secret.parent, staging_dir / other)
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "staged", other, "artifact")
    assert err.value.code == 404


# --- staging ids ---


@pytest.mark.parametrize("which", ["artifact", "graph"])
async def test_an_unknown_staging_id_is_a_404(files, jp_fetch, which) -> None:
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "staged", _paths.new_staging_id(), which)
    assert err.value.code == 404
    assert "stage it again" in json.loads(err.value.response.body)["message"]


@pytest.mark.parametrize("sid", [SID.upper(), SID[:-1], SID + "0", "g" * 32, "-" * 32])
async def test_a_malformed_staging_id_is_a_404(
    files, http_server_client, jp_base_url, jp_auth_header, sid
) -> None:
    response = await request(
        http_server_client, jp_base_url, f"staged/{sid}/artifact", headers=jp_auth_header
    )
    assert response.code == 404


def test_staging_ids_are_128_bits_from_the_csprng(monkeypatch) -> None:
    # Given the secrets module's random source (the OS's CSPRNG) replaced by a recorder
    import secrets

    asked: list[int] = []

    def token_bytes(n: int) -> bytes:
        asked.append(n)
        return bytes(range(n))

    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    # When an id is made
    sid = _paths.new_staging_id()
    # Then all of it came from secrets, 16 bytes = 128 bits, as 32 hex digits
    assert asked == [16]
    assert sid == bytes(range(16)).hex()
    assert _paths.STAGING_ID.match(sid)


def test_staging_ids_are_unique_and_match_the_route() -> None:
    ids = {_paths.new_staging_id() for _ in range(2000)}
    assert len(ids) == 2000
    route = next(p for p, cls in ROUTES if cls is jr.StagedHandler)
    assert all(re.fullmatch(route, f"staged/{sid}/artifact") for sid in ids)
    assert all(_paths.STAGING_ID.match(sid) for sid in ids)


def test_the_kernel_side_names_exports_with_the_csprng_id(monkeypatch, tmp_path) -> None:
    # Given the kernel side staging a model, with os.urandom recorded
    from jupyter_modelsave import kernel as jk

    from .. import models

    made: list[str] = []
    real = _paths.new_staging_id

    def recorded() -> str:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(jk, "new_staging_id", recorded)
    side = jk.ModelSaveKernel({"mlp": models.mlp()}, tmp_path / "staging", tmp_path)
    try:
        result = side.stage({"model": "mlp", "format": "safetensors"})
    finally:
        side.discard_all()
    assert made == [result["id"]]


# --- staged files: private from the start, removed on discard, at exit and on server start ---


def test_open_private_is_0600_before_any_byte_under_any_umask(tmp_path) -> None:
    for umask in (0o000, 0o022, 0o077):
        old = os.umask(umask)
        try:
            path = tmp_path / f"f{umask:o}"
            with _paths.open_private(path) as f:
                assert os.stat(path).st_mode & 0o777 == 0o600  # before the first write
                f.write(b"x")
        finally:
            os.umask(old)
        assert os.stat(path).st_mode & 0o777 == 0o600


def test_open_private_refuses_an_existing_name_or_a_symlink(tmp_path, secret) -> None:
    os.symlink(secret, tmp_path / "link")
    with pytest.raises(FileExistsError):
        _paths.open_private(tmp_path / "link")
    assert secret.read_bytes() == SECRET


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_published_exports_are_private_from_the_start(monkeypatch, tmp_path, fmt) -> None:
    # Given the most permissive umask, and every private file creation recorded
    import torch

    from jupyter_modelsave import kernel as jk

    from .. import models

    created: list[Path] = []
    real_open = _paths.open_private

    def watched(path):
        f = real_open(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
        created.append(Path(path))
        return f

    monkeypatch.setattr(_paths, "open_private", watched)
    staging = tmp_path / "staging"
    namespace = {"mlp": models.mlp(), "torch": torch}
    side = jk.ModelSaveKernel(namespace, staging, tmp_path)
    old = os.umask(0)
    try:
        # When an export is staged and published
        result = side.stage({"model": "mlp", "format": fmt, "example": "torch.randn(2, 8)"})
    finally:
        os.umask(old)
    folder = staging / result["id"]
    try:
        # Then the staging folder and the export's folder are 0700, every file is 0600, and each
        # file was created private (or is a link to a file that was already 0600)
        assert os.stat(staging).st_mode & 0o777 == 0o700
        assert os.stat(folder).st_mode & 0o777 == 0o700
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"index.json", result["file"]}
        for path in files:
            assert os.stat(path).st_mode & 0o777 == 0o600, path
            made_private = path in created or any(  # index.json: a private temporary renamed
                c.parent == path.parent and c.name.startswith(f".{path.name}.") for c in created
            )
            assert made_private or os.stat(path).st_nlink > 1, path
        # When it is discarded, its folder is gone
        side.discard({"id": result["id"]})
        assert not folder.exists()
    finally:
        side.discard_all()


def test_the_default_staging_folder_is_per_user_and_private(monkeypatch, tmp_path) -> None:
    # Given a fresh temp folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    default = _paths.default_staging_dir()
    old = os.umask(0)
    try:
        _paths.private_dir(default)
    finally:
        os.umask(old)
    # Then <tmp>/jupyter_modelsave-<user>/staging exists, both levels 0700
    assert default.parent.name.startswith("jupyter_modelsave-")
    assert os.stat(default).st_mode & 0o777 == 0o700
    assert os.stat(default.parent).st_mode & 0o777 == 0o700
    # And an existing folder of ours with wider permissions is tightened
    os.chmod(default, 0o777)
    _paths.private_dir(default)
    assert os.stat(default).st_mode & 0o777 == 0o700


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership")
def test_a_staging_folder_of_another_user_is_refused(monkeypatch, tmp_path) -> None:
    # Given a folder that (as far as the check sees) belongs to another user
    folder = tmp_path / "staging"
    folder.mkdir(mode=0o777)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(folder).st_uid + 1)
    with pytest.raises(_paths.StagingFolderError, match="another user"):
        _paths.private_dir(folder)


def test_exports_are_removed_when_the_kernel_process_exits(tmp_path) -> None:
    # Given a process that stages an export and exits normally without discarding it
    code = (
        "import sys, torch\n"
        "from jupyter_modelsave import kernel as jk\n"
        "side = jk.ModelSaveKernel({'m': torch.nn.Linear(4, 2)}, sys.argv[1], sys.argv[2])\n"
        "print(side.stage({'model': 'm', 'format': 'safetensors'})['id'])\n"
    )
    staging = tmp_path / "staging"
    out = subprocess.run(
        [sys.executable, "-c", code, str(staging), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    sid = out.stdout.strip().splitlines()[-1]
    assert _paths.STAGING_ID.match(sid)
    # Then its published folder is gone (atexit), and nothing else is left in the staging folder
    assert not (staging / sid).exists()
    assert list(staging.iterdir()) == []


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


@pytest.fixture
def leftovers(staging_dir: Path) -> dict[str, Path]:
    """Published folders as a previous session left them, before the server starts."""

    def published(sid: str, pid: Any) -> Path:
        folder = staging_dir / sid
        folder.mkdir()
        (folder / "net.onnx").write_bytes(PAYLOAD)
        if pid != "none":
            (folder / "index.json").write_text(json.dumps({"artifact": "net.onnx", "pid": pid}))
        return folder

    return {
        "dead": published("a" * 32, _dead_pid()),
        "no_index": published("b" * 32, "none"),
        "bad_pid": published("c" * 32, "1234"),
        "alive": published("d" * 32, os.getpid()),
    }


async def test_the_server_removes_stale_exports_when_it_starts(
    leftovers, jp_serverapp, staging_dir
) -> None:
    # Given (fixture) folders of a dead kernel, one cut off before its index, one of a live
    # process, and a file that is not a staging folder
    # When the server has started
    # Then the dead ones are gone, the live one and the unrelated entry are kept
    assert not leftovers["dead"].exists()
    assert not leftovers["no_index"].exists()
    assert not leftovers["bad_pid"].exists()
    assert (leftovers["alive"] / "net.onnx").read_bytes() == PAYLOAD
    assert os.stat(staging_dir).st_mode & 0o777 == 0o700


@pytest.fixture
def not_ours_file(staging_dir: Path) -> Path:
    path = staging_dir / "notes"
    path.write_text("keep me")
    return path


async def test_the_stale_sweep_leaves_other_entries_alone(not_ours_file, jp_serverapp) -> None:
    assert not_ours_file.read_text() == "keep me"


def test_a_publish_cut_short_leaves_nothing(monkeypatch, tmp_path) -> None:
    # Given a staging folder that runs out of space halfway through publishing
    import errno

    from jupyter_modelsave import kernel as jk
    from jupyter_modelsave.core.errors import WriteError

    from .. import models

    sources: list[Path] = []

    def full(source: Path, target: Path) -> None:
        sources.append(source)
        with _paths.open_private(target) as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jk, "publish_tree", full)
    side = jk.ModelSaveKernel({"mlp": models.mlp()}, tmp_path / "staging", tmp_path)
    # When the kernel side stages, the user gets a WriteError that says what to do
    with pytest.raises(WriteError, match=r"No space left.*staging_dir"):
        side.stage({"model": "mlp", "format": "safetensors"})
    # Then neither the published half nor the core's staged file is left
    assert side.staged == {}
    assert list((tmp_path / "staging").iterdir()) == []
    assert sources and not sources[0].exists()


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_a_published_copy_is_whole_and_private(monkeypatch, tmp_path, kernel_copy) -> None:
    # Given a staged file with the umask's usual 0644 (so it is copied, not linked)

    source = tmp_path / "staged.bin"
    source.write_bytes(PAYLOAD * 3000)
    os.chmod(source, 0o644)
    if not kernel_copy:  # an OS or file system without copy_file_range

        def unsupported(*args):
            raise OSError(95, "Operation not supported")

        monkeypatch.setattr(os, "copy_file_range", unsupported, raising=False)
    # When it is published
    _paths.publish_file(source, tmp_path / "published.bin")
    # Then the copy has the same bytes, its own inode, and mode 0600
    published = tmp_path / "published.bin"
    assert published.read_bytes() == source.read_bytes()
    assert os.stat(published).st_ino != os.stat(source).st_ino
    assert os.stat(published).st_mode & 0o777 == 0o600
    assert os.stat(source).st_mode & 0o777 == 0o644  # the staged file itself is left as it was
