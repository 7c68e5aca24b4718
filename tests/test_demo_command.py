"""The README's demo command opens JupyterLab on the demo notebook, as root and as a normal user.

Issue 16.1: ``make demo`` stopped at "Running as root is not recommended" on the README's
machine (root). Each test runs the command the README gives, waits for the server's "is running
at" line, fetches ``/lab`` and the demo notebook with the printed token, then stops the server.

- As root: in this checkout (its set-up done first; idempotent).
- As a normal user, when the tests run as root: a throwaway user (``useradd``, removed after)
  gets a copy of the checkout (its files, plus ``node_modules`` so npm is not downloaded again)
  and runs the command there with ``runuser``, set-up included: that is a fresh machine for that
  user (this checkout's ``.venv`` cannot be shared: its interpreter may live in root's home). It
  takes 5-10 minutes on 2 cores, so it runs with ``pytest --fresh-setup`` (``make
  demo-check``). When the tests run as a normal user, that user runs it in this checkout.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[1]
IS_ROOT = os.geteuid() == 0
URL = re.compile(r"(http://(?:localhost|127\.0\.0\.1):(\d+)/lab\?token=(\w+))")
# The machine's own network settings (a CA bundle, a proxy, pip's local index) that a new user's
# login would get from the machine; nothing of this checkout's.
MACHINE_ENV = re.compile(r"(NODE_EXTRA_CA_CERTS|SSL_CERT_\w+|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|"
                         r"PIP_\w+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)")  # fmt: skip


def readme_demo_command() -> list[str]:
    """The first line of the README's first bash block: ``make demo   # ...``."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    command = block.group(1).splitlines()[0].split("#")[0].split()
    assert command == ["make", "demo"], command
    return command


@pytest.fixture(scope="module")
def set_up() -> None:
    """The demo command sets up first; do that here (idempotent: stamps) so the test times only
    the server."""
    if subprocess.run(["make", "-q", "setup"], cwd=REPO).returncode != 0:
        subprocess.run(["make", "setup"], cwd=REPO, check=True, capture_output=True)


@pytest.fixture
def new_user(request):
    """A throwaway user with a copy of the checkout in its home; removed afterwards."""
    if not request.config.getoption("--fresh-setup"):
        pytest.skip("sets up a new user's copy from scratch (5-10 min): pytest --fresh-setup")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("needs useradd and runuser")
    name = f"jmsdemo{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    try:
        home = Path("~" + name).expanduser()
        copy = home / "jupyter_modelsave"
        copy.mkdir()
        _copy_checkout(copy)
        subprocess.run(["chown", "-R", f"{name}:{name}", str(copy)], check=True)
        yield name, copy
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def _copy_checkout(dest: Path) -> None:
    """The checkout's files as git sees them (tracked and new, not ignored), plus node_modules."""
    listed = ["git", "ls-files", "-z", "-co", "--exclude-standard"]
    files = subprocess.run(listed, cwd=REPO, check=True, capture_output=True).stdout
    extra = ["node_modules"] if (REPO / "node_modules").is_dir() else []
    pack = subprocess.Popen(["tar", "--null", "-T", "-", "-cf", "-", *extra], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    unpack = subprocess.Popen(["tar", "-xf", "-", "-C", str(dest)], stdin=pack.stdout)
    assert pack.stdin is not None and pack.stdout is not None
    pack.stdout.close()
    pack.stdin.write(files)
    pack.stdin.close()
    assert pack.wait() == 0 and unpack.wait() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(checkout: Path, user: str | None = None, timeout: float = 180) -> None:
    """Run the README's demo command in ``checkout`` (as ``user``), check JupyterLab, stop it."""
    port = free_port()
    command = [
        *readme_demo_command(),
        f"DEMO_FLAGS=--no-browser --port={port} --ServerApp.port_retries=0",
    ]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}  # fmt: skip
    if user is not None:
        env["HOME"] = str(Path("~" + user).expanduser())
        env.update({k: v for k, v in os.environ.items() if MACHINE_ENV.fullmatch(k)})
        command = [shutil.which("runuser"), "-u", user, "--", "env", "-i",
                   *(f"{k}={v}" for k, v in env.items()), *command]  # fmt: skip
    server = subprocess.Popen(
        command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    log: list[str] = []
    try:
        url = _wait_for_url(server, log, timeout)
        assert url is not None, "JupyterLab did not start:\n" + "".join(log[-40:])
        link, found_port, token = url
        assert int(found_port) == port
        assert _get(link) == 200  # /lab with the token
        # jupyter lab FILE serves FILE's folder and opens FILE in it
        assert any(f"local directory: {checkout / 'examples'}" in line for line in log)
        notebook = f"http://127.0.0.1:{port}/api/contents/demo.ipynb?token={token}"
        assert _get(notebook) == 200
        assert not any("Running as root is not recommended" in line for line in log)
        assert any("is running at" in line for line in log)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _wait_for_url(server: subprocess.Popen, log: list[str], timeout: float):
    deadline = time.monotonic() + timeout
    assert server.stdout is not None
    for line in server.stdout:
        log.append(line)
        match = URL.search(line)
        if match:
            return match.group(1), match.group(2), match.group(3)
        if time.monotonic() > deadline:
            break
    return None


def _get(url: str) -> int:
    """The status of a GET; the server prints its URL just before it listens, so retry a bit."""
    for attempt in range(30):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.status
        except urllib.error.URLError as err:
            if not isinstance(err.reason, ConnectionRefusedError) or attempt == 29:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


@pytest.mark.skipif(not IS_ROOT, reason="the machine the README names runs as root; this is not")
def test_the_demo_command_starts_jupyterlab_as_root(set_up):
    run_demo(REPO)


@pytest.mark.skipif(not IS_ROOT, reason="runs below as the current (normal) user")
def test_the_demo_command_sets_up_and_starts_jupyterlab_as_a_new_normal_user(new_user):
    name, copy = new_user
    run_demo(copy, name, timeout=40 * 60)


@pytest.mark.skipif(IS_ROOT, reason="runs above with a new user")
def test_the_demo_command_starts_jupyterlab_as_this_normal_user(set_up):
    run_demo(REPO)
