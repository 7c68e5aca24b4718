"""Figure 1: ``jms.stage(..., parity=False)`` vs a bare ``torch.onnx.export`` with the same options.

Both warm (one untimed call each first), same process, same models; jms's re-stage cache is
cleared before every call, so each call is a full export (the torchlib registry stays reused, as
in any long-lived kernel). Target: ratio <= 1.05.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import CASES, median_time

import jupyter_modelsave as jms
from jupyter_modelsave.core.formats import _program_cache


def bare_export(model, x, axes, path):
    dims = {d: torch.export.Dim(a) for d, a in axes.items()}
    name = "input" if isinstance(model, torch.nn.Sequential) else "tokens"
    torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes={name: dims},
                      output_names=["output"], verbose=False)  # fmt: skip


def main() -> None:
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, (build, make_input, axes) in CASES.items():
            model, x = build(), make_input()
            name = "input" if case == "cnn" else "tokens"

            def ours(model=model, x=x, name=name, axes=axes):
                _program_cache.clear()  # a fresh export each time, not a re-stage
                jms.stage(model, x, parity=False, dynamic_axes={name: axes}).discard()

            def bare(model=model, x=x, axes=axes):
                bare_export(model, x, axes, Path(tmp) / "bare.onnx")

            ours(), bare()  # warm-up
            t_ours, t_bare = median_time(ours), median_time(bare)
            print(f"{case}: stage {t_ours:.3f} s, torch.onnx.export {t_bare:.3f} s")
            ratios.append(t_ours / t_bare)
    worst = max(ratios)
    print(f"export_overhead worst case over {list(CASES)} (target <= 1.05)")
    print(f"ratio {worst:.3f}")


if __name__ == "__main__":
    main()
