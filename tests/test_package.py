"""The package imports fast and lazily, and the server extension answers only authenticated calls."""

import json
import re
import subprocess
import sys

import pytest
from tornado.httpclient import HTTPClientError

import jupyter_modelsave


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_import_does_not_import_torch_onnx_or_jupyter():
    # When the package is imported in a fresh interpreter
    out = _run(
        "import sys, jupyter_modelsave;"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'IPython', 'ipywidgets',"
        " 'jupyterlab', 'jupyter_server') if m in sys.modules))"
    )
    # Then none of the heavy packages came with it
    assert out == "[]"


def test_import_is_fast():
    code = (
        "import time; t = time.perf_counter(); import jupyter_modelsave;"
        "print(time.perf_counter() - t)"
    )
    best = min(float(_run(code)) for _ in range(3))
    assert best < 0.3


def test_version_is_exposed():
    assert jupyter_modelsave.__version__ not in ("", "dev")


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jupyter_modelsave.nope  # noqa: B018


async def test_health_answers_with_the_version(jp_fetch):
    # When the health route is called with the server's token
    response = await jp_fetch("modelsave", "health")
    # Then it answers with the package version
    assert response.code == 200
    assert json.loads(response.body) == {"status": "ok", "version": jupyter_modelsave.__version__}


async def test_health_refuses_requests_without_a_token(jp_fetch):
    # When the route is called without credentials
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("modelsave", "health", headers={"Authorization": ""})
    # Then the server refuses it
    assert err.value.code == 403


def test_server_extension_is_enabled():
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = out.stdout + out.stderr
    assert re.search(r"jupyter_modelsave\S*\s+\S*enabled", text)
    assert re.search(r"jupyter_modelsave \S+ \S*OK", text)  # the "Validating" line


def test_labextension_is_installed_enabled_and_ok():
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in (out.stdout + out.stderr).splitlines() if "jupyter_modelsave" in ln)
    assert re.search(r"jupyter_modelsave v\S+ \S*enabled\S* \S*OK", line), line
