"""Writer processes for the reliability tests: stage once, then write under faults.

Run as ``python -m tests.reliability._writer_child <command> ...`` from the repository root. It
prints one JSON object per line saying what it did; the test process checks the folders.

- ``crash ROOT SEED POINTS ROUNDS LOOP_FORMAT...``: stages every format once (two versions of a
  tiny model), then for each format, copy mode (hard link, or bytes copied as across
  filesystems) and scenario (a new versioned name in a folder, ``overwrite=True`` over a
  previous version, and for folder artifacts the same without RENAME_EXCHANGE) forks writers
  that SIGKILL themselves just before their k-th filesystem call (a file copy is cut halfway).
  For the loop formats it also forks, ROUNDS times, a writer that overwrites one path over and
  over, alternating the two versions, and SIGKILLs it after a seeded random delay,
  snapshotting the folder each time.
- ``race PLAN PEERS``: for each step of the JSON plan, stages and writes, waiting after the copy
  until ``PEERS`` writers have copied (a file barrier), so their commits race.

With ``JMS_CRASH_FRAMEWORK=keras`` the ``crash`` command runs the Keras formats instead (a tiny
Keras model; tests/keras/test_crash_safety.py).

Forking after staging reuses the staged exports, so each format is staged once per process.
"""

from __future__ import annotations

import builtins
import errno
import functools
import json
import os
import random
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

# name -> stage() options; ONNX uses the fast TorchScript exporter (the write step is the same)
FORMATS: dict[str, dict[str, Any]] = {
    "onnx": {"format": "onnx", "exporter": "torchscript"},
    "onnx_external": {"format": "onnx", "exporter": "torchscript", "external_data": True},
    "safetensors": {"format": "safetensors"},
    "safetensors_sharded": {"format": "safetensors", "max_shard_size": 1024},
    "state_dict": {"format": "state_dict"},
    "checkpoint": {"format": "checkpoint"},
    "torchscript": {"format": "torchscript"},
    "torch_export": {"format": "torch_export"},
}
# Keras models (``JMS_CRASH_FRAMEWORK=keras``; tests/keras runs them where TensorFlow is installed)
KERAS_FORMATS: dict[str, dict[str, Any]] = {
    "keras_onnx": {"format": "onnx"},
    "keras_savedmodel": {"format": "savedmodel"},
    "keras_file": {"format": "keras"},
    "keras_weights": {"format": "weights"},
}
FOLDER_FORMATS = {"onnx_external", "safetensors_sharded", "keras_savedmodel"}  # folder artifacts
MODES = ("link", "copy")
SCENARIOS = ("fresh", "overwrite")
# folder artifacts are also replaced where RENAME_EXCHANGE is missing (two renames, a short gap)
FOLDER_SCENARIOS = (*SCENARIOS, "overwrite_renames")
# calls that change the filesystem (or flush it): the writer is killed just before one of them
_STEPS = ("link", "rename", "replace", "unlink", "rmdir", "mkdir", "fsync", "sendfile", "open")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def tiny_model(seed: int) -> Any:
    """Linear(16, 32) has a 2 KiB weight: over ONNX's 1 KiB external-data threshold."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def tiny_keras_model(seed: int) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((16,), name="x"), keras.layers.Dense(32), keras.layers.Dense(4)]
    )


def stage(fmt: str, seed: int, model: Any = None) -> Any:
    """Stage ``model`` (default: ``tiny_model(seed)``) in ``fmt`` without a parity check."""
    import torch

    import jupyter_modelsave as jms

    if fmt in KERAS_FORMATS:
        import numpy as np

        model = tiny_keras_model(seed) if model is None else model
        example = np.zeros((2, 16), "float32")
        return jms.stage(model, example, parity=False, name="tiny", **KERAS_FORMATS[fmt])
    model = tiny_model(seed) if model is None else model
    return jms.stage(model, torch.zeros(2, 16), parity=False, name="tiny", **FORMATS[fmt])


def target_in(folder: Path, staged: Any) -> Path:
    """The explicit file path used by the overwrite scenarios."""
    return folder / f"model{staged._extension}"


# --- fault injection ----------------------------------------------------------------------------


@contextmanager
def forced_copies(staged_paths: list[Path]) -> Iterator[None]:
    """Hard links from a staged export fail as across filesystems, so the bytes are copied."""
    real_link = os.link
    roots = [str(p) for p in staged_paths]

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if any(str(src).startswith(root) for root in roots):
            raise OSError(errno.EXDEV, "Invalid cross-device link (injected)")
        real_link(src, dst, *args, **kwargs)

    os.link = link
    try:
        yield
    finally:
        os.link = real_link


@contextmanager
def no_exchange() -> Iterator[None]:
    """A filesystem without ``renameat2(RENAME_EXCHANGE)``."""
    from jupyter_modelsave.core import artifacts

    real = artifacts._exchange
    artifacts._exchange = lambda a, b: False
    try:
        yield
    finally:
        artifacts._exchange = real


@contextmanager
def counted_steps(kill_at: int = 0) -> Iterator[list[int]]:
    """Count filesystem calls; with ``kill_at``, SIGKILL this process just before that one (a
    sendfile is cut halfway first). Yields the live counter."""
    count = [0]
    reals = {name: getattr(os, name) for name in _STEPS}
    real_open = builtins.open

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if _changes_files(name, args, kwargs):
                count[0] += 1
                if count[0] == kill_at:
                    if name == "sendfile":
                        out_fd, in_fd, offset, _ = args
                        real(out_fd, in_fd, offset, max(1, (os.fstat(in_fd).st_size - offset) // 2))
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return call

    for name, real in reals.items():
        setattr(os, name, wrap(name, real))
    builtins.open = wrap("builtin_open", real_open)
    try:
        yield count
    finally:
        for name, real in reals.items():
            setattr(os, name, real)
        builtins.open = real_open


def _changes_files(name: str, args: tuple, kwargs: dict) -> bool:
    if name == "open":
        flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
        return bool(flags & _WRITE_FLAGS)
    if name == "builtin_open":
        mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
        return isinstance(mode, str) and any(c in mode for c in "wxa+")
    return True


def in_fork(body: Callable[[], Any]) -> int:
    """Run ``body`` in a forked child; return its wait status (the child never returns here)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException as err:  # reported through the exit code and stderr
            print(f"writer: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            code = 3
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def _status(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"signal {os.WTERMSIG(wait_status)}"
    return f"exit {os.WEXITSTATUS(wait_status)}"


# --- commands ----------------------------------------------------------------------------------


def crash(root: Path, seed: int, points: int, rounds: int, loop_formats: list[str]) -> None:
    from jupyter_modelsave.core import trust

    trust.sign("0" * 64, "onnx")  # the signing key is made on first use: not in a counted write
    rng = random.Random(seed)
    for fmt in crash_formats():
        new, old = stage(fmt, 0), stage(fmt, 1)
        for mode in MODES:
            for scenario in FOLDER_SCENARIOS if fmt in FOLDER_FORMATS else SCENARIOS:
                _crash_case(
                    root / fmt / mode / scenario, fmt, mode, scenario, new, old, rng, points
                )
        if fmt in loop_formats:
            _kill_loop(root / fmt / "loop", fmt, [old, new], rounds, rng)
        new.discard()
        old.discard()


def crash_formats() -> dict[str, dict[str, Any]]:
    """The formats the ``crash`` command kills writers of: PyTorch's, or Keras' when asked."""
    return KERAS_FORMATS if os.environ.get("JMS_CRASH_FRAMEWORK") == "keras" else FORMATS


def _crash_case(
    base: Path, fmt: str, mode: str, scenario: str, new: Any, old: Any, rng: Any, points: int
) -> None:
    def prepare(folder: Path) -> Path | str:
        folder.mkdir(parents=True)
        if scenario == "fresh":
            return f"{folder}/"
        old.write(target_in(folder, old))
        return target_in(folder, new)

    def write(dest: Path | str, kill_at: int = 0) -> list[int]:
        copies = forced_copies([new.path]) if mode == "copy" else nullcontext()
        renames = no_exchange() if scenario == "overwrite_renames" else nullcontext()
        with copies, renames, counted_steps(kill_at) as count:
            new.write(dest, overwrite=scenario != "fresh")
        return count

    total = write(prepare(base / "dry"))[0]  # a whole write, in this process: how many steps
    for k in _kill_points(total, points, rng):
        folder = base / f"k{k:03d}"
        dest = prepare(folder)
        status = in_fork(functools.partial(write, dest, kill_at=k))
        _emit(
            kind="crash", format=fmt, mode=mode, scenario=scenario, k=k, steps=total,
            folder=str(folder), target=str(dest), status=_status(status),
            new_sha=new.sha256, old_sha=old.sha256,
        )  # fmt: skip


def _kill_points(total: int, points: int, rng: random.Random) -> list[int]:
    """The first and last step always, then a seeded random sample of the ones between."""
    if points <= 0 or points >= total:
        return list(range(1, total + 1))
    middle = rng.sample(range(2, total), max(0, points - 2))
    return sorted({1, total, *middle})


def _kill_loop(base: Path, fmt: str, versions: list[Any], rounds: int, rng: Any) -> None:
    folder = base / "live"
    folder.mkdir(parents=True)
    target = target_in(folder, versions[0])
    versions[0].write(target)

    def forever() -> None:
        for i in range(10**9):
            versions[1 - i % 2].write(target, overwrite=True)

    for r in range(rounds):
        pid = os.fork()
        if pid == 0:
            try:
                forever()
            finally:
                os._exit(3)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
        snapshot = base / f"r{r:03d}"
        shutil.copytree(folder, snapshot, symlinks=True)
        _emit(
            kind="loop", format=fmt, round=r, folder=str(snapshot),
            target=str(snapshot / target.name), status=_status(status),
            new_sha=versions[1].sha256, old_sha=versions[0].sha256,
        )  # fmt: skip


def race(plan: list[dict[str, Any]], peers: int) -> None:
    """Each step: stage, copy, wait for the peers at the step's barrier, commit; report."""
    for step in plan:
        staged = stage(step["format"], step["seed"])
        wait = functools.partial(wait_for_peers, Path(step["barrier"]), peers)
        with racing(wait, lambda step=step: (step["stagger"], step["widen"])):
            try:
                path = staged.write(step["dest"], overwrite=step["overwrite"])
                _emit(step=step["name"], path=str(path), sha=staged.sha256, error=None)
            except Exception as err:
                _emit(step=step["name"], path=None, sha=staged.sha256, error=type(err).__name__,
                      message=str(err))  # fmt: skip
            finally:
                staged.discard()


@contextmanager
def racing(
    wait: Callable[[], Any], timing: Callable[[], tuple[float, float]] = lambda: (0.0, 0.0)
) -> Iterator[None]:
    """Make concurrent writes collide: each waits after copying, so all have passed the checks
    that the name is free. ``timing()`` gives the calling writer's (stagger, widen): a pause
    before it commits, and one between renaming its artifact and renaming its manifest. A
    writer that swaps first and pauses longest lets a lockless other finish in between."""
    from jupyter_modelsave.core import artifacts

    real_file, real_tree, real_swap = artifacts._copy_file, artifacts._copy_tree, artifacts._swap_in

    def copy_file(source: Path, tmp: Path) -> None:
        real_file(source, tmp)
        if artifacts.TMP_MARK not in tmp.parent.name:  # a file artifact, not a folder's part
            wait()
            time.sleep(timing()[0])

    def copy_tree(source: Path, tmp: Path) -> None:
        real_tree(source, tmp)
        wait()
        time.sleep(timing()[0])

    def swap_in(tmp: Path, target: Path) -> None:
        real_swap(tmp, target)
        time.sleep(timing()[1])

    artifacts._copy_file, artifacts._copy_tree = copy_file, copy_tree
    artifacts._swap_in = swap_in
    try:
        yield
    finally:
        artifacts._copy_file, artifacts._copy_tree = real_file, real_tree
        artifacts._swap_in = real_swap


def wait_for_peers(barrier: Path, peers: int, timeout: float = 60.0) -> None:
    """A barrier between processes (or threads): a file per arrival, wait for ``peers`` of them."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"{os.getpid()}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + timeout
    while len(os.listdir(barrier)) < peers and time.monotonic() < deadline:
        time.sleep(0.002)


def _emit(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def main(argv: list[str]) -> None:
    warnings.simplefilter("ignore")
    command, *args = argv
    if command == "crash":
        crash(Path(args[0]), int(args[1]), int(args[2]), int(args[3]), args[4:])
    elif command == "race":
        race(json.loads(Path(args[0]).read_text()), int(args[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
