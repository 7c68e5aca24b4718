"""The README's demo command opens JupyterLab on the demo notebook, as root and as a normal user.

Issue 16.1: ``make demo`` stopped at "Running as root is not recommended" on the README's
machine (root). The test runs the command the README gives, as root and as a throwaway normal
user (``useradd`` + ``runuser``: the checkout and its ``.venv`` are world-readable, so the user
runs them as they are; setup is already done, so nothing is written there), waits for the
server's "is running at" line, fetches ``/lab`` and the demo notebook with the token, then stops it.
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


def readme_demo_command() -> list[str]:
    """The first line of the README's first bash block: ``make demo   # ...``."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    command = block.group(1).splitlines()[0].split("#")[0].split()
    assert command == ["make", "demo"], command
    return command


@pytest.fixture(scope="module")
def set_up() -> None:
    """The demo command sets up first; do that here (idempotent: stamps) so the test times only
    the server, and a normal user finds nothing left to write."""
    if subprocess.run(["make", "-q", "setup"], cwd=REPO).returncode != 0:
        subprocess.run(["make", "setup"], cwd=REPO, check=True, capture_output=True)


@pytest.fixture
def normal_user():
    """A throwaway user with a home of its own, removed afterwards."""
    if not IS_ROOT:
        yield None  # this test process is a normal user already
        return
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("needs useradd and runuser")
    name = f"jmsdemo{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(user: str | None) -> None:
    """Run the README's demo command (as ``user``), check JupyterLab answers, stop it."""
    port = free_port()
    command = [
        *readme_demo_command(),
        f"DEMO_FLAGS=--no-browser --port={port} --ServerApp.port_retries=0",
    ]
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    }
    if user is not None:
        home = Path("~" + user).expanduser()
        env["HOME"] = str(home)
        command = [shutil.which("runuser"), "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items()),
                   *command]  # fmt: skip
    else:
        env["HOME"] = os.environ.get("HOME", "/root")
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log: list[str] = []
    try:
        url = _wait_for_url(server, log)
        assert url is not None, "JupyterLab did not start:\n" + "".join(log[-40:])
        link, found_port, token = url
        assert int(found_port) == port
        assert _get(link) == 200  # /lab with the token
        # jupyter lab FILE serves FILE's folder and opens FILE in it
        assert any(f"local directory: {REPO / 'examples'}" in line for line in log)
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


def _wait_for_url(server: subprocess.Popen, log: list[str]) -> tuple[str, str, str] | None:
    deadline = time.monotonic() + 180
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
    run_demo(None)


def test_the_demo_command_starts_jupyterlab_as_a_normal_user(set_up, normal_user):
    run_demo(normal_user)
