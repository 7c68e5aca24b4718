"""Figure 3: saving a state_dict with jupyter_modelsave vs the plain library calls (CPU here).

Same tensors, same run: ``safetensors.torch.save_file``, ``torch.save``, jms safetensors as one
file and sharded (``jms.export(format="safetensors", parity=False)``: save, sha256, manifest,
fsync, atomic rename), and the raw disk bandwidth (write + fsync of the same number of bytes).
Plain ``save_file`` does not fsync; ``save_file + fsync`` is shown too. Throughputs in GB/s.
Target: jms single file >= 1.0x ``save_file``'s throughput.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import jupyter_modelsave as jms

SIZE_MB = int(os.environ.get("JMS_BENCH_MB", "512"))


def model() -> torch.nn.Module:
    layers = max(1, SIZE_MB // 64)  # 4096 x 4096 float32 = 64 MiB per layer
    return torch.nn.Sequential(*[torch.nn.Linear(4096, 4096, bias=False) for _ in range(layers)])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def main() -> None:
    net = model()
    state = net.state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    with tempfile.TemporaryDirectory(dir=os.environ.get("JMS_BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        payload = os.urandom(nbytes)

        def raw():
            with open(tmp / "raw.bin", "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())

        def save_file_fsync():
            save_file(state, str(tmp / "b.safetensors"))
            fsync(tmp / "b.safetensors")

        results = {
            "disk write+fsync": timed(raw),
            "safetensors save_file": timed(lambda: save_file(state, str(tmp / "a.safetensors"))),
            "save_file + fsync": timed(save_file_fsync),
            "torch.save": timed(lambda: torch.save(state, tmp / "c.pt")),
            "jms safetensors": timed(lambda: jms.export(net, tmp / "d.safetensors",
                                                        format="safetensors", parity=False)),
            "jms sharded (64MB)": timed(lambda: jms.export(net, tmp / "e.safetensors",
                                                           format="safetensors", parity=False,
                                                           max_shard_size="64MB")),
        }  # fmt: skip
    gb = nbytes / 1e9
    for label, seconds in results.items():
        print(f"{label:>24}: {seconds:6.3f} s  {gb / seconds:6.2f} GB/s")
    ratio = results["safetensors save_file"] / results["jms safetensors"]
    print(f"{gb:.2f} GB; jms single-file throughput vs save_file (target >= 1.0)")
    print(f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
