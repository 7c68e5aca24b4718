"""Figure: the release check on a CNN: what the fp16/int8 variants weigh and how fast they run.

A CNN built in code (about 1.2 M parameters, batch 8 of 3x64x64) is staged as fp32, fp16 and
int8 ONNX. For each: its size against fp32, the latency ``stage`` measured (p50 in ONNX Runtime,
the model eager), and the same ONNX Runtime session timed by hand (a plain loop of
``session.run`` on the same inputs, after warm-up), the two alternated over 5 rounds (medians).
The ratio line compares jms's p50 with the by-hand p50 of the fp32 artifact: jms should measure
what a hand-made loop measures.
Target: ratio within 0.8-1.25.
"""

from __future__ import annotations

import statistics
import time

import onnxruntime as ort
import torch
from torch import nn

import jupyter_modelsave as jms

RUNS = 50
ROUNDS = 5


def cnn() -> nn.Module:
    layers, width = [], 3
    for out in (32, 64, 128, 128, 256):
        layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        if out != 128:
            layers.append(nn.MaxPool2d(2))
        width = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 100)).eval()


def by_hand(path: str, x: torch.Tensor) -> float:
    """p50 (ms) of ``session.run`` over RUNS runs after 3 warm-ups: the plain library call."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as jms's session
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x.numpy()}
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    from jupyter_modelsave.core.latency import Budget, measure

    torch.manual_seed(0)
    model, x = cnn(), torch.randn(8, 3, 64, 64)
    budget = Budget(RUNS, 30.0)
    staged = {p: jms.stage(model, x, precision=p, latency=False) for p in ("fp32", "fp16", "int8")}
    base = staged["fp32"].size_bytes
    for precision, s in staged.items():
        ours, hand, eager = [], [], []
        for _ in range(ROUNDS):  # alternated: other processes' load falls on both alike
            lat = measure(*s._parts, budget)
            ours.append(lat["p50_ms"])
            eager.append(lat["eager_p50_ms"])
            hand.append(by_hand(str(s.path), x))
        s.figures = statistics.median(ours), statistics.median(hand), statistics.median(eager)
        agreement = s.report.agreement["outputs"]["output"]["value"] if s.report.agreement else 1.0
        print(
            f"{precision}: {s.size_bytes / 1e6:.2f} MB ({s.size_bytes / base:.2f}x fp32), parity "
            f"{'passed' if s.report.passed else 'FAILED'} (top-1 {agreement:.1%}); ORT p50 "
            f"{s.figures[0]:.2f} ms (by hand {s.figures[1]:.2f} ms), eager {s.figures[2]:.2f} ms"
        )
    ours, hand, _ = staged["fp32"].figures
    print(f"jms's fp32 ORT p50 {ours:.2f} ms vs by hand {hand:.2f} ms (medians of {ROUNDS} "
          "alternated rounds; target 0.8-1.25)")  # fmt: skip
    print(f"ratio {ours / hand:.3f}")


if __name__ == "__main__":
    main()
