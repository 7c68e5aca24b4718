"""Peak memory of untrusted loads: every hostile artifact of the adversarial suite, one per process.

Each attack (built by ``tests/security/_hostile.py``) is loaded with ``jms.load`` (or
``jms.from_base64``, without ``trusted=True``) in a fresh Python process, after that process
has imported the format's libraries and loaded one honest artifact of the format, so the figure
is the load alone. The growth of the peak RSS (``VmHWM`` after ``/proc/self/clear_refs``) is
compared with the documented bound, 64 MiB + 8 x the artifact's bytes (``core/limits.py``).
The last line is the worst ``ratio`` growth / bound (target: < 1). Linux only.
Run from this folder: ``../.venv/bin/python untrusted_memory.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MiB = 2**20


def build(folder: Path) -> list[tuple[str, Path, str, str]]:
    """(attack, artifact, format, loader) for every attack."""
    import torch

    import jupyter_modelsave as jms
    from tests import models
    from tests.security import _hostile as h

    exported = jms.stage(models.mlp(), torch.randn(2, 8), format="torch_export", parity=False,
                         dynamic_axes={"input": {0: "batch"}}).write(folder / "own")  # fmt: skip
    attacks = [(f"onnx: {name}", build(folder / f"{i}.onnx"), "onnx", "load")
               for i, (name, build) in enumerate(h.ONNX_BOMBS.items())]  # fmt: skip
    attacks += [
        ("onnx: Expand, as a string", folder / "0.onnx", "onnx", "from_base64"),
        ("state_dict: deflated zeros", h.deflated_state_dict(folder / "deflated.pt"), "state_dict", "load"),
        ("state_dict: deflated, as a string", folder / "deflated.pt", "state_dict", "from_base64"),
        ("checkpoint: deflated zeros", h.deflated_checkpoint(folder / "ckpt.pt"), "checkpoint", "load"),
        *[(f"state_dict: pickle of {kind}", h.pickle_bomb(folder / f"pickle{i}.pt", kind), "state_dict", "load")
          for i, kind in enumerate(h.PICKLE_BOMBS)],
        ("safetensors: 1 GiB declared", h.safetensors_declaring(folder / "x.safetensors"), "safetensors", "load"),
        ("torchscript: __setstate__ code", h.torchscript_running_code(folder / "ts.pt", folder / "m1"),
         "torchscript", "load"),
        ("torch_export: code in expr_str", h.pt2_running_code(exported, folder / "p.pt2", folder / "m2"),
         "torch_export", "load"),
    ]  # fmt: skip
    try:
        import h5py  # noqa: F401
    except ImportError:
        return attacks
    secret = folder / "secret.txt"
    secret.write_bytes(b"secret")
    attacks += [
        ("weights: fill value", h.h5_fill_value(folder / "fill.weights.h5"), "weights", "load"),
        ("weights: gzip chunks", h.h5_compressed(folder / "gzip.weights.h5"), "weights", "load"),
        ("weights: external storage", h.h5_external_storage(folder / "ext.weights.h5", secret), "weights", "load"),
        ("keras: 1 GiB embedding in the config", h.keras_config_bomb(folder / "bomb.keras"), "keras", "load"),
    ]  # fmt: skip
    return attacks


def child(path: str, fmt: str, loader: str) -> None:
    """Warm the format's libraries, then measure one untrusted load."""
    import torch

    import jupyter_modelsave as jms
    from tests import models
    from tests.security._hostile import string_of
    from tests.security._memory import peak_growth

    warm = Path(tempfile.mkdtemp())
    if fmt in ("weights", "keras"):
        import keras

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        jms.load(jms.export(model, warm, format="weights"))
    else:
        honest = {"onnx": "onnx", "safetensors": "safetensors"}.get(fmt, "state_dict")
        jms.load(jms.export(models.mlp(), warm, torch.randn(2, 8), format=honest,
                            **({"exporter": "torchscript"} if honest == "onnx" else {})))  # fmt: skip
    call = (lambda: jms.from_base64(string_of(Path(path), fmt))) if loader == "from_base64" \
        else (lambda: jms.load(path))  # fmt: skip
    error, growth = peak_growth(call)
    print(json.dumps({"growth": growth, "error": type(error).__name__ if error else None}))


def main() -> None:
    from jupyter_modelsave.core.hashing import size_of
    from jupyter_modelsave.core.limits import memory_bound

    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for attack, path, fmt, loader in build(Path(tmp)):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), fmt, loader],
                                 capture_output=True, text=True, cwd=REPO, check=True).stdout  # fmt: skip
            result = json.loads(out.strip().splitlines()[-1])
            size = size_of(path)
            rows.append((attack, size, result["growth"], memory_bound(size), result["error"]))
    print(f"{'attack':44s} {'bytes':>10s} {'growth MiB':>11s} {'bound MiB':>10s}  outcome")
    for attack, size, growth, bound, error in rows:
        print(
            f"{attack:44s} {size:>10,} {growth / MiB:>11.1f} {bound / MiB:>10.0f}  {error or 'loaded'}"
        )
    worst = max(rows, key=lambda r: r[2] / r[3])
    print(f"worst: {worst[0]} ({worst[2] / MiB:.1f} MiB of {worst[3] / MiB:.0f} MiB)")
    print(f"ratio {worst[2] / worst[3]:.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5])
    else:
        main()
