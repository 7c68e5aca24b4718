"""Figure: localization (the first diverging module) vs one parity check.

For the CNN and the 2-layer transformer of ``_common.CASES`` (ONNX through dynamo, their dynamic
axes): ``staged.verify()`` (every probe through the live model and ONNX Runtime) and
``staged.localize()`` (the live model's module calls on one probe: a run to list them, an ONNX
Runtime session on a copy of the graph whose extra outputs are the mapped values, one run of it,
and a live run comparing each call as it happens), alternated, medians of ``JMS_BENCH_ROUNDS``
(7). The model passes parity, so ``verify`` does not localize by itself; localization does the
same work on a passing model as on a failing one (it compares every mapped call either way).
Target: ratio <= 3 for both; the worst is printed last.
"""

from __future__ import annotations

import os

from _common import CASES, alternating

import jupyter_modelsave as jms

ROUNDS = int(os.environ.get("JMS_BENCH_ROUNDS", "7"))


def measure(name: str) -> float:
    build, example, axes = CASES[name]
    model, x = build(), example()
    input_name = "tokens" if name == "transformer" else "input"
    staged = jms.stage(model, x, dynamic_axes={input_name: axes}, exporter="dynamo")
    assert staged.report.passed
    staged.verify(), staged.localize()  # warm-up
    compared = len(staged.report.layers)
    t_verify, t_localize = alternating(staged.verify, staged.localize, ROUNDS)
    ratio = t_localize / t_verify
    print(
        f"{name}: localize {t_localize * 1e3:.1f} ms ({compared} module calls compared) vs "
        f"parity {t_verify * 1e3:.1f} ms on {len(staged.report.probes)} probes: {ratio:.2f}x "
        "(target <= 3)"
    )
    staged.discard()
    return ratio


def main() -> None:
    ratios = [measure(name) for name in ("cnn", "transformer")]
    print(f"ratio {max(ratios):.3f}")


if __name__ == "__main__":
    main()
