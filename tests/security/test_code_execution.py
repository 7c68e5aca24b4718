"""No code from an untrusted program artifact runs: not at load, whichever way it is loaded.

Issue 14, findings 1 (a ``.pt2`` whose shape expressions ``sympy.sympify`` evaluates) and 2 (a
TorchScript archive whose ``__setstate__`` runs in ``torch.jit.load``). Each payload creates a
marker file; the control tests show the payloads are live (with ``trusted=True`` they run).
Untrusted programs are refused before their loader sees them, so the only way in is the
user's own signature, which an attacker cannot make (``test_signatures.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import jupyter_modelsave as jms

from .. import models
from ._hostile import (
    forged_signature,
    pt2_running_code,
    string_of,
    torchscript_running_code,
    with_manifest,
)


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict[str, Path]:
    """The user's own signed artifacts: a real exported program of each kind."""
    folder = tmp_path_factory.mktemp("own")
    mlp, x = models.mlp(), torch.randn(2, 8)
    return {
        fmt: jms.stage(mlp, x, format=fmt, name=fmt, parity=False,
                       dynamic_axes={"input": {0: "batch"}}).write(folder)
        for fmt in ("torchscript", "torch_export")
    }  # fmt: skip


def _attack(fmt: str, own: dict[str, Path], folder: Path, marker: Path) -> Path:
    if fmt == "torch_export":
        return pt2_running_code(own["torch_export"], folder / "program.pt2", marker)
    return torchscript_running_code(folder / "program.pt", marker)


def _own_signature(own: dict[str, Path], fmt: str) -> str:
    import json

    return json.loads(Path(f"{own[fmt]}.json").read_text())["signature"]


# loader name -> how the attacker's artifact reaches the user
LOADERS: dict[str, Callable[[Path, str, dict[str, Path]], object]] = {
    "load": lambda p, fmt, own: jms.load(p),
    "load, manifest with the right sha256": lambda p, fmt, own: jms.load(with_manifest(p, fmt)),
    "load, manifest with a made-up signature": lambda p, fmt, own: jms.load(
        with_manifest(p, fmt, forged_signature(p))),
    "load, manifest with the user's signature of another artifact": lambda p, fmt, own: jms.load(
        with_manifest(p, fmt, _own_signature(own, fmt))),
    "load_into": lambda p, fmt, own: jms.load_into(models.mlp(), p),
    "load_into, manifest with the right sha256": lambda p, fmt, own: jms.load_into(
        models.mlp(), with_manifest(p, fmt)),
    "from_base64": lambda p, fmt, own: jms.from_base64(string_of(p, fmt)),
    "from_base64, a copied signature": lambda p, fmt, own: jms.from_base64(
        string_of(p, fmt, _own_signature(own, fmt).split(":", 1)[1])),
}  # fmt: skip


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("fmt", ["torch_export", "torchscript"])
def test_an_untrusted_program_runs_no_code_however_it_is_loaded(fmt, loader, own, tmp_path):
    # Given a program artifact whose loader would run the attacker's code (create a file)
    marker = tmp_path / "pwned"
    path = _attack(fmt, own, tmp_path, marker)
    # When it is loaded without trust, by any route
    with pytest.raises(jms.UnsafeArtifactError, match="trusted=True") as err:
        LOADERS[loader](path, fmt, own)
    # Then it is refused, saying how to trust it, and the code never ran
    assert "signed with your key" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["torch_export", "torchscript"])
def test_the_payloads_are_live_so_the_refusals_are_real(fmt, own, tmp_path):
    marker = tmp_path / "ran"
    path = _attack(fmt, own, tmp_path, marker)
    jms.load(path, trusted=True)
    assert marker.exists()


def test_the_setstate_payload_also_runs_from_a_string_when_trusted(tmp_path):
    marker = tmp_path / "ran"
    path = torchscript_running_code(tmp_path / "program.pt", marker)
    jms.from_base64(string_of(path, "torchscript"), trusted=True)
    assert marker.exists()
