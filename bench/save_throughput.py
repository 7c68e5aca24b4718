"""Figure 3: saving a state_dict with jupyter_modelsave vs the plain library calls.

Same tensors, same run, median of ``JMS_BENCH_REPEAT`` (3) runs each: ``safetensors.torch.save_file``,
``save_file`` + fsync, ``save_file`` + fsync + sha256 (what a durable, hashed save costs by hand),
``torch.save``, the raw disk (write + fsync of the same number of bytes), ``jms.stage`` alone, and
``jms.export(format="safetensors", parity=False)`` as one file and sharded (one-pass write hashed
while written, manifest, fsync, atomic rename). With CUDA, the same from the model on the GPU.
Also the peak host memory ``jms.export`` adds (VmHWM, Linux). Throughputs in GB/s.
Target: jms single file >= 1.0x ``save_file``'s throughput; from CUDA >= 90% of the disk's.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import jupyter_modelsave as jms

SIZE_MB = int(os.environ.get("JMS_BENCH_MB", "512"))
REPEAT = int(os.environ.get("JMS_BENCH_REPEAT", "3"))


def model() -> torch.nn.Module:
    layers = max(1, SIZE_MB // 64)  # 4096 x 4096 float32 = 64 MiB per layer
    return torch.nn.Sequential(*[torch.nn.Linear(4096, 4096, bias=False) for _ in range(layers)])


def median(fn, folder: Path) -> float:
    """Median wall time; the folder is emptied before each run (no overwrite costs)."""
    times = []
    for _ in range(REPEAT):
        clear(folder)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def clear(folder: Path) -> None:
    for f in folder.iterdir():
        _remove(f)


def _remove(path: Path) -> None:
    if path.is_dir():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    else:
        path.unlink()


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def peak_rss_growth(fn) -> int | None:
    """Bytes the peak resident set grew by while ``fn`` ran (None where Linux's VmHWM is missing)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None

    def hwm() -> int:
        with open("/proc/self/status") as fh:
            return int(next(x for x in fh if x.startswith("VmHWM:")).split()[1]) * 1024

    before = hwm()
    fn()
    return hwm() - before


def cases(net: torch.nn.Module, tmp: Path, payload: bytes) -> dict:
    state = net.state_dict()

    def raw():
        with open(tmp / "raw.bin", "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())

    def save_file_fsync(hashed: bool = False):
        save_file(state, str(tmp / "b.safetensors"))
        fsync(tmp / "b.safetensors")
        if hashed:
            sha256(tmp / "b.safetensors")

    def jms_export(**options):
        jms.export(net, tmp / "d.safetensors", format="safetensors", parity=False, **options)

    return {
        "disk write+fsync": raw,
        "safetensors save_file": lambda: save_file(state, str(tmp / "a.safetensors")),
        "save_file + fsync": save_file_fsync,
        "save_file + fsync + sha256": lambda: save_file_fsync(hashed=True),
        "torch.save": lambda: torch.save(state, tmp / "c.pt"),
        "jms.stage alone": lambda: jms.stage(net, format="safetensors", parity=False).discard(),
        "jms safetensors": jms_export,
        "jms sharded (64MB)": lambda: jms_export(max_shard_size="64MB"),
    }


def main() -> None:
    net = model()
    nbytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    gb = nbytes / 1e9
    with tempfile.TemporaryDirectory(dir=os.environ.get("JMS_BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        payload = os.urandom(nbytes)
        results = {label: median(fn, tmp) for label, fn in cases(net, tmp, payload).items()}
        del payload
        clear(tmp)
        grown = peak_rss_growth(lambda: cases(net, tmp, b"")["jms safetensors"]())
        if torch.cuda.is_available():
            gpu = net.cuda()
            state = gpu.state_dict()
            results["CUDA: save_file"] = median(
                lambda: save_file(state, str(tmp / "g.safetensors")), tmp
            )
            results["CUDA: jms safetensors"] = median(cases(gpu, tmp, b"")["jms safetensors"], tmp)
            clear(tmp)
            gpu_grown = peak_rss_growth(lambda: cases(gpu, tmp, b"")["jms safetensors"]())
    for label, seconds in results.items():
        print(f"{label:>28}: {seconds:6.3f} s  {gb / seconds:6.2f} GB/s")
    if grown is not None:
        print(f"peak host memory added by jms.export: {grown / 2**20:.0f} MiB ({gb:.2f} GB saved)")
    if "CUDA: jms safetensors" in results:
        share = results["disk write+fsync"] / results["CUDA: jms safetensors"]
        added = "?" if gpu_grown is None else f"{gpu_grown / 2**20:.0f}"
        print(f"CUDA: jms at {share:.0%} of the disk's bandwidth (target >= 90%); peak host "
              f"memory added {added} MiB")  # fmt: skip
    durable = results["save_file + fsync + sha256"] / results["jms safetensors"]
    print(f"jms single file vs save_file + fsync + sha256 (the same guarantees): {durable:.3f}")
    ratio = results["safetensors save_file"] / results["jms safetensors"]
    print(f"{gb:.2f} GB; jms single-file throughput vs save_file (target >= 1.0)")
    print(f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
