"""Figure 5: in one process, export model A, then time exporting a *different* model B.

jupyter_modelsave reuses what a long-lived kernel can (the torchlib registry); a bare
``torch.onnx.export`` rebuilds it every call. Target: ratio <= 0.7.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import cnn, transformer

import jupyter_modelsave as jms


def main() -> None:
    a, xa = cnn(), torch.randn(2, 3, 32, 32)
    b, xb = transformer(), torch.randint(0, 1000, (2, 16))
    with tempfile.TemporaryDirectory() as tmp:
        jms.stage(a, xa, parity=False).discard()  # model A: the kernel is now warm
        torch.onnx.export(a, (xa,), str(Path(tmp) / "a.onnx"), dynamo=True, verbose=False)

        start = time.perf_counter()
        jms.stage(b, xb, parity=False).discard()
        ours = time.perf_counter() - start

        start = time.perf_counter()
        torch.onnx.export(b, (xb,), str(Path(tmp) / "b.onnx"), dynamo=True, verbose=False)
        bare = time.perf_counter() - start
    print(
        f"model B after model A: stage {ours:.3f} s, torch.onnx.export {bare:.3f} s (target <= 0.7)"
    )
    print(f"ratio {ours / bare:.3f}")


if __name__ == "__main__":
    main()
