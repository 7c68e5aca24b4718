"""Figure 5: in one process, export model A, then time exporting *different* models B.

jupyter_modelsave reuses what a long-lived kernel can (the torchlib registry); a bare
``torch.onnx.export`` rebuilds it every call. Each timed export is of a new model object (so no
re-stage cache applies), median of 3, both sides in the same warm process. Target: ratio <= 0.7.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import cnn, median_time, transformer

import jupyter_modelsave as jms


def main() -> None:
    xa, xb = torch.randn(2, 3, 32, 32), torch.randint(0, 1000, (2, 16))
    with tempfile.TemporaryDirectory() as tmp:
        jms.stage(cnn(), xa, parity=False).discard()  # model A: the kernel is now warm
        torch.onnx.export(cnn(), (xa,), str(Path(tmp) / "a.onnx"), dynamo=True, verbose=False)
        ours = median_time(lambda: jms.stage(transformer(), xb, parity=False).discard())
        bare = median_time(
            lambda: torch.onnx.export(
                transformer(), (xb,), str(Path(tmp) / "b.onnx"), dynamo=True, verbose=False
            )
        )
    print(
        f"model B after model A: stage {ours:.3f} s, torch.onnx.export {bare:.3f} s (target <= 0.7)"
    )
    print(f"ratio {ours / bare:.3f}")


if __name__ == "__main__":
    main()
