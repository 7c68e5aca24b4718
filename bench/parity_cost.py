"""Figure 6: the parity step vs doing it by hand.

By hand: one ONNX Runtime session, then for each of the same probes a torch forward, an ORT run
and a numpy comparison. The two alternate, round after round (medians of 9), so that load from
other processes on a shared machine falls on both alike. jms's parity session keeps ORT's threads
from spinning between runs (they would steal the cores from the next torch forward); a second line
compares with a by-hand loop that does the same, which isolates jms's own overhead.
Target: ratio <= 1.2.
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

    def by_hand(options: ort.SessionOptions | None = None):
        session = ort.InferenceSession(
            str(staged.path), options, providers=["CPUExecutionProvider"]
        )
        for probe in probes.values():
            (t,) = probe.tensors
            with torch.no_grad():
                ref = model(t).numpy()
            (got,) = session.run(None, {"tokens": t.numpy()})
            np.isclose(got, ref, atol=1e-4, rtol=1e-3).all()

    quiet = ort.SessionOptions()  # what jms's parity session does: ORT threads do not spin
    quiet.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ours(), by_hand(), by_hand(quiet)
    t_ours, t_hand = alternating(ours, by_hand, ROUNDS)
    t_ours_again, t_quiet = alternating(ours, lambda: by_hand(quiet), ROUNDS)
    print(
        f"by hand with ORT's spinning off too: {t_quiet * 1e3:.1f} ms, jms "
        f"{t_ours_again * 1e3:.1f} ms ({t_ours_again / t_quiet:.2f}x: jms's own overhead)"
    )
    print(f"parity on {len(probes)} probes: {t_ours * 1e3:.1f} ms; by hand (default ORT session) "
          f"{t_hand * 1e3:.1f} ms (target <= 1.2)")  # fmt: skip
    print(f"ratio {t_ours / t_hand:.3f}")


if __name__ == "__main__":
    main()
