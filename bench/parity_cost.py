"""Figure 6: the parity step vs doing it by hand.

By hand: one ONNX Runtime session, then for each of the same probes a torch forward, an ORT run
and a numpy comparison. The two alternate, round after round (medians of 9), so that load from
other processes on a shared machine falls on both alike. Target: ratio <= 1.2.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from _common import alternating, transformer

import jupyter_modelsave as jms
from jupyter_modelsave.core.inputs import make_probes

ROUNDS = 9


def main() -> None:
    model, x = transformer(), torch.randint(0, 1000, (2, 16))
    staged = jms.stage(model, x, parity=False, dynamic_axes={"tokens": {0: "batch", 1: "seq"}})
    from jupyter_modelsave.core.inputs import ExampleInputs

    example = ExampleInputs((x,), {}, ["tokens"])
    probes = make_probes(example, {"batch": [(0, 0)], "seq": [(0, 1)]})

    def ours():
        staged.verify(atol=1e-4, rtol=1e-3)

    def by_hand():
        session = ort.InferenceSession(str(staged.path), providers=["CPUExecutionProvider"])
        for probe in probes.values():
            (t,) = probe.tensors
            with torch.no_grad():
                ref = model(t).numpy()
            (got,) = session.run(None, {"tokens": t.numpy()})
            np.isclose(got, ref, atol=1e-4, rtol=1e-3).all()

    ours(), by_hand()
    t_ours, t_hand = alternating(ours, by_hand, ROUNDS)
    print(f"parity on {len(probes)} probes: {t_ours * 1e3:.1f} ms; by hand {t_hand * 1e3:.1f} ms "
          "(target <= 1.2)")  # fmt: skip
    print(f"ratio {t_ours / t_hand:.3f}")


if __name__ == "__main__":
    main()
