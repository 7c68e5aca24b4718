"""ONNX over 2 GB: ``jms.stage`` (export with external data + parity) vs a bare dynamo export.

A model of ``JMS_BENCH_GB`` (2.5) GB of float32 weights is built in code on the CPU (square
Linear layers). Both sides run in one process after a warm-up export of a tiny model:

- bare: ``torch.onnx.export(model, (x,), dynamo=True)`` then ``.save(path)`` (external data);
- jms: ``jms.stage(model, x)``: the same export with metadata embedded, ``onnx.checker`` by path,
  and parity on 3 probes in ONNX Runtime (which maps the external data file, no copy).

For each, the wall time and how much the process's peak resident memory grew (Linux VmHWM) are
printed, as a multiple of the model's size, both for the resident set (which counts the page
cache pages ONNX Runtime maps) and for anonymous memory (copies). The last lines: the peak
anonymous-memory ratio, then the time ratio (jms.stage / bare export).
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

import jupyter_modelsave as jms

SIZE_GB = float(os.environ.get("JMS_BENCH_GB", "2.5"))
WIDTH = 8192  # one Linear(8192, 8192) is 268 MB of float32


def model() -> torch.nn.Module:
    per_layer = (WIDTH * WIDTH + WIDTH) * 4
    layers = max(1, math.ceil(SIZE_GB * 1e9 / per_layer))
    torch.manual_seed(0)
    with torch.no_grad():
        net = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    return net.eval().requires_grad_(False)


def status(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status, in bytes."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in keys:
                fields[key] = int(line.split()[1]) * 1024
    return fields


def measured(fn) -> tuple[float, int, int]:
    """(seconds, peak RSS growth, peak anonymous-memory growth) while ``fn()`` runs.

    The peak RSS (VmHWM) also counts file pages mapped from the page cache (ONNX Runtime maps
    the external data); anonymous memory (RssAnon, sampled every 10 ms) is what copies cost.
    """
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    start = status("VmRSS", "RssAnon")
    peak_anon = [start["RssAnon"]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak_anon[0] = max(peak_anon[0], status("RssAnon")["RssAnon"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    fn()
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    return seconds, status("VmHWM")["VmHWM"] - start["VmRSS"], peak_anon[0] - start["RssAnon"]


def main() -> None:
    net = model()
    x = torch.randn(1, WIDTH)
    size = sum(p.numel() * p.element_size() for p in net.parameters())
    tiny = torch.nn.Linear(4, 4).eval()
    torch.onnx.export(tiny, (torch.randn(1, 4),), dynamo=True, verbose=False)  # warm-up
    jms.stage(tiny, torch.randn(1, 4)).discard()
    rss = status("VmRSS")["VmRSS"]
    print(f"model: {size / 1e9:.2f} GB of float32 weights; process RSS {rss / 1e9:.2f} GB")

    with tempfile.TemporaryDirectory(dir=os.environ.get("JMS_BENCH_DIR")) as tmp:

        def bare() -> None:
            program = torch.onnx.export(net, (x,), dynamo=True, verbose=False)
            program.save(str(Path(tmp) / "bare.onnx"))

        t_bare, m_bare, a_bare = measured(bare)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
        staged = []
        t_jms, m_jms, a_jms = measured(lambda: staged.append(jms.stage(net, x)))
        report = staged[0].report
        files = sorted(p.name for p in staged[0].path.iterdir())
        staged[0].discard()
    for label, seconds, peak, anon in (
        ("bare torch.onnx.export + save", t_bare, m_bare, a_bare),
        ("jms.stage (export, check, parity)", t_jms, m_jms, a_jms),
    ):
        print(f"{label}: {seconds:6.2f} s; peak RSS +{peak / 1e9:.2f} GB ({peak / size:.2f}x the "
              f"model), anonymous memory +{anon / 1e9:.2f} GB ({anon / size:.2f}x)")  # fmt: skip
    print(f"jms artifact {files}; {report.summary()}")
    print(f"peak anonymous memory growth (copies of weights), jms.stage / bare export: "
          f"{a_jms / max(a_bare, 1):.2f} ({a_jms / size:.2f}x vs {a_bare / size:.2f}x the model)")  # fmt: skip
    print(f"ratio {t_jms / t_bare:.3f}")


if __name__ == "__main__":
    main()
