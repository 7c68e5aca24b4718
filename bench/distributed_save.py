"""Figure 8: saving a sharded (FSDP2) model from 1, 2 and 4 CPU processes (gloo).

Per world size, every rank holds its shard of a model of ``JMS_BENCH_MB`` (1024) MB
(``Linear(4096, 4096)`` layers of 64 MiB, built on the meta device and materialised shard by
shard, so no rank ever holds more than its shard). In turn, ``JMS_BENCH_REPEAT`` (2) rounds of:

- ``dcp.save``: ``torch.distributed.checkpoint.save`` of ``model.state_dict()`` (its
  ``FileSystemWriter``: one file per rank, fsynced), then ``+ hashing``: each rank's sha256 of
  the files it wrote (the baseline of a durable, hashed save);
- ``jms.export(format="safetensors", parity=False)``, with ``parity=True`` (the default), and
  with ``max_shard_size`` = the model's size / world size (``parity=False``): one file per rank,
  so that every rank has a file to hash (a file's sha256 is computed by one rank);
- gather-then-``save_file``: ``get_model_state_dict(full_state_dict=True, cpu_offload=True)``
  gathers the whole model to rank 0, which calls ``safetensors.torch.save_file``, then fsync.

A first round, not counted, warms up imports and allocations.

For each: the wall time (the slowest rank's; median and best over rounds: on a shared machine the
best is the steadier estimate) and the memory each rank added during the call: peak resident
(``VmHWM`` after resetting it, minus ``VmRSS`` before; it counts the file pages a reader maps)
and peak anonymous memory (``RssAnon`` sampled every 2 ms: what the process allocated).
Targets: ``jms.export`` <= 1.1x (``dcp.save`` + hashing); the memory it adds <= 2 buffers
(2 x 64 MiB). Run: ``../.venv/bin/python distributed_save.py``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZE_MB = int(os.environ.get("JMS_BENCH_MB", "1024"))
REPEAT = int(os.environ.get("JMS_BENCH_REPEAT", "2"))
WORLDS = [int(w) for w in os.environ.get("JMS_BENCH_WORLDS", "1,2,4").split(",")]
LAYER = 4096
MIB = 2**20
BUFFER = 64 * MIB


def build_sharded(world: int) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with torch.device("meta"):
        layers = [torch.nn.Linear(LAYER, LAYER, bias=False) for _ in range(max(1, SIZE_MB // 64))]
        model = torch.nn.Sequential(*layers)
    mesh = init_device_mesh("cpu", (world,))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(dist.get_rank())
    with torch.no_grad():
        for param in model.parameters():
            param.to_local().normal_(generator=generator)
    return model


def memory() -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def anonymous() -> int:
    """RssAnon in bytes: this process's own memory, without the file pages it maps."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakAnonymous:
    """The highest RssAnon seen while the block runs (sampled every 2 ms on a thread)."""

    def __enter__(self) -> PeakAnonymous:
        self.peak, self._stop = anonymous(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, anonymous())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anonymous())


def measured(step) -> tuple[float, int, int]:
    """(seconds, peak resident bytes added, peak anonymous bytes added) of this rank's step.

    Resident memory counts the file pages a reader maps (the page cache's, shared and
    reclaimable); anonymous memory is what the process itself allocated.
    """
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before, _ = memory()
    anon_before = anonymous()
    dist.barrier()
    with PeakAnonymous() as peak:
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
    return seconds, memory()[1] - before, peak.peak - anon_before


def dcp_save(model: torch.nn.Module, folder: Path, hash_too: bool) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save(model.state_dict(), checkpoint_id=str(folder))
    if hash_too:
        for file in sorted(folder.glob(f"__{dist.get_rank()}_*.distcp")):
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                while chunk := fh.read(MIB):
                    digest.update(chunk)
    dist.barrier()


def jms_export(model: torch.nn.Module, folder: Path, parity: bool, per_rank: bool = False) -> None:
    import jupyter_modelsave as jms

    shard = {"max_shard_size": f"{SIZE_MB // dist.get_world_size()}MiB"} if per_rank else {}
    jms.export(model, f"{folder}/", format="safetensors", name="model", parity=parity, **shard)


def gather_then_save_file(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    if dist.get_rank() == 0:
        save_file(state, str(folder / "model.safetensors"))
        with open(folder / "model.safetensors", "rb") as fh:  # durable, as the others are
            os.fsync(fh.fileno())
    del state
    dist.barrier()


CASES = {
    "dcp.save": lambda m, f: dcp_save(m, f, hash_too=False),
    "dcp.save + hashing": lambda m, f: dcp_save(m, f, hash_too=True),
    "jms.export (parity=False)": lambda m, f: jms_export(m, f, parity=False),
    "jms.export (parity=True)": lambda m, f: jms_export(m, f, parity=True),
    "jms.export (file per rank)": lambda m, f: jms_export(m, f, parity=False, per_rank=True),
    "gather + save_file": gather_then_save_file,
}


def rank_main(rank: int, world: int, port: int, root: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = build_sharded(world)
    results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in CASES}
    for round_ in range(REPEAT + 1):  # round 0 warms up (imports, first allocations)
        for name, case in CASES.items():
            folder = Path(root) / f"{round_}-{len(results[name])}-{name.split()[0]}"
            if rank == 0:
                folder.mkdir()
            dist.barrier()
            figures = measured(functools.partial(case, model, folder))
            if round_:
                results[name].append(figures)
            dist.barrier()
            if rank == 0:
                shutil.rmtree(folder)
    shard = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    queue.put((rank, shard, results))
    dist.barrier()
    dist.destroy_process_group()


def run_world(world: int) -> dict[str, tuple[float, float, float, float]]:
    """name -> (median and best of the slowest rank's seconds, worst MiB added: resident, anonymous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = tempfile.mkdtemp(prefix="jms-bench-dist-", dir=os.environ.get("JMS_BENCH_DIR"))
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    try:
        mp.start_processes(rank_main, args=(world, port, root, queue), nprocs=world,
                           start_method="spawn")  # fmt: skip
        by_rank = [queue.get() for _ in range(world)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures = {}
    for name in CASES:
        runs = [r[2][name] for r in by_rank]
        slowest = [max(rank[i][0] for rank in runs) for i in range(REPEAT)]
        resident = max(run[1] for rank in runs for run in rank) / MIB
        anon = max(run[2] for rank in runs for run in rank) / MIB
        figures[name] = (statistics.median(slowest), min(slowest), resident, anon)
    return figures


def main() -> None:
    print(f"model {SIZE_MB} MB, {REPEAT} rounds, world sizes {WORLDS}; torch {torch.__version__}")
    worst = 0.0
    for world in WORLDS:
        figures = run_world(world)
        median_base, best_base = figures["dcp.save + hashing"][:2]
        shard = SIZE_MB / world
        print(f"\nworld size {world} (shard {shard:.0f} MB per rank); seconds: the slowest rank, "
              "median and best of the rounds; memory: the worst rank's MiB added")  # fmt: skip
        print(
            f"  {'':28} {'median':>7} {'ratio':>6} {'best':>6} {'ratio':>6} {'resident':>9} {'anon':>6}"
        )
        for name, (median, best, resident, anon) in figures.items():
            print(f"  {name:28} {median:7.2f} {median / median_base:5.2f}x {best:6.2f} "
                  f"{best / best_base:5.2f}x {resident:9.0f} {anon:6.0f}")  # fmt: skip
        worst = max(worst, figures["jms.export (parity=False)"][1] / best_base)
    print(f"\nratios against dcp.save + hashing; buffers: 2 x {BUFFER // MIB} MiB")
    print(f"ratio {worst:.2f} (best of rounds, worst world size)")


if __name__ == "__main__":
    sys.exit(main())
