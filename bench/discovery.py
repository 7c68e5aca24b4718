"""Figure 4: ``find_models`` over a namespace of 10,000 objects holding 20 models.

Some models are on CUDA when a GPU is present; there the run also enables
``torch.cuda.set_sync_debug_mode("error")`` so any synchronisation would raise.
Baseline: a bare isinstance scan of the same namespace. Target: <= 50 ms.
"""

from __future__ import annotations

import torch
from _common import cnn, median_time, transformer

import jupyter_modelsave as jms


def namespace() -> dict[str, object]:
    ns: dict[str, object] = {f"value_{i}": i for i in range(5000)}
    ns.update({f"text_{i}": "x" * 10 for i in range(2000)})
    ns.update({f"tensor_{i}": torch.zeros(4) for i in range(2980)})
    cuda = torch.cuda.is_available()
    for i in range(20):
        model = transformer() if i % 4 == 0 else cnn()
        ns[f"model_{i}"] = model.cuda() if cuda and i % 2 else model
    return ns


def main() -> None:
    ns = namespace()
    assert len(ns) == 10_000
    jms.find_models(ns)  # warm-up (and registers the watch hooks once)
    if torch.cuda.is_available():
        torch.cuda.set_sync_debug_mode("error")
    ours = median_time(lambda: jms.find_models(ns), repeat=10)
    bare = median_time(
        lambda: [v for v in ns.values() if isinstance(v, torch.nn.Module)], repeat=10
    )
    found = len(jms.find_models(ns))
    print(f"find_models: {found} models in {ours * 1e3:.2f} ms (target <= 50 ms); "
          f"bare isinstance scan {bare * 1e3:.2f} ms")  # fmt: skip
    print(f"ratio {ours / 0.050:.3f} of the 50 ms budget")


if __name__ == "__main__":
    main()
