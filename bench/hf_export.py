"""Figure: staging a transformers model (export + parity) vs what a user would do by hand.

For BERT, GPT-2 and ViT from small configs (``tests/architectures.py``; random init, no hub):
``jms.stage(model, example)`` with its defaults (parity on 3 probes; the exporter "auto" picks
dynamo) and with ``exporter="torchscript"``, against the bare TorchScript exporter
(``torch.onnx.export(dynamo=False)`` through a small module that passes the inputs by name, with
``use_cache`` off, as jms does) + one ONNX Runtime
session + one run. Each timed call gets a new model object (no re-stage cache applies), after a
warm-up of each side; the sides alternate, median of ``JMS_BENCH_ROUNDS`` (3). Target: <= 1.5x.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jupyter_modelsave as jms
from tests import architectures

CASES = {"BERT": architectures.bert, "GPT-2": architectures.gpt2, "ViT": architectures.vit}
ROUNDS = int(os.environ.get("JMS_BENCH_ROUNDS", "3"))


class ByName(torch.nn.Module):
    """What a user writes for the TorchScript exporter: tensors in, a keyword call out."""

    def __init__(self, model: torch.nn.Module, names: list[str], **options: object) -> None:
        super().__init__()
        self.model, self.names, self.options = model, names, options

    def forward(self, *tensors: torch.Tensor) -> object:
        return self.model(**dict(zip(self.names, tensors)), **self.options)


def bare_torchscript_export(model: torch.nn.Module, example: dict, folder: str) -> None:
    """The TorchScript exporter on the model, then one ONNX Runtime session and run."""
    import onnxruntime

    path = str(Path(folder) / "bare.onnx")
    options = {"use_cache": False} if hasattr(model.config, "use_cache") else {}
    wrapper = ByName(model, list(example), return_dict=False, **options).eval()
    torch.onnx.export(wrapper, tuple(example.values()), path, dynamo=False,
                      input_names=list(example), verbose=False)  # fmt: skip
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    session.run(None, {k: v.numpy() for k, v in example.items() if k in names})


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(build: Callable, folder: str) -> dict[str, float]:
    """Median seconds of each side; every call gets a freshly built model (not timed)."""
    sides = {
        "jms default": lambda m, x: jms.stage(m, x).discard(),
        "jms torchscript": lambda m, x: jms.stage(m, x, exporter="torchscript").discard(),
        "bare": lambda m, x: bare_torchscript_export(m, x, folder),
    }
    for side in sides.values():  # warm-up
        side(*build())
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(ROUNDS):
        for name, side in sides.items():
            model, example = build()
            times[name].append(timed(lambda: side(model, example)))  # noqa: B023
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for name, build in CASES.items():
            t = measure(build, folder)
            default, script = t["jms default"] / t["bare"], t["jms torchscript"] / t["bare"]
            worst = max(worst, default)
            print(
                f"{name}: stage {t['jms default']:.2f} s (ratio {default:.2f}), "
                f"stage exporter='torchscript' {t['jms torchscript']:.2f} s (ratio {script:.2f}), "
                f"bare TorchScript export + ORT check {t['bare']:.2f} s",
                flush=True,
            )
    print(
        f"worst, jms defaults vs bare TorchScript export + ORT (target <= 1.5): ratio {worst:.2f}"
    )


if __name__ == "__main__":
    main()
