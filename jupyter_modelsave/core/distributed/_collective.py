"""jms's own process group for one collective call: every rank joins within a timeout, and a
failure on any rank raises on every rank.

Each collective call on a sharded model (``stage``, ``export``, ``write``, ``load_into``) opens a
gloo group over every rank of the default group with ``dist.new_group(timeout=...)``. Creating it
is the rendezvous: a call made on some ranks only raises ``DistributedTimeoutError`` on the ranks
that made it once the timeout has passed, instead of hanging. Every later exchange of the call
(jms's and DCP's) runs on that group with the same timeout, so a rank that dies half-way also ends
in that error on the others. The group is destroyed when the call returns. gloo carries only
small Python objects here (plans, hashes, outcomes); the tensors never travel.

The timeout is ``timeout=`` (seconds), else the environment variable ``JMS_DISTRIBUTED_TIMEOUT``,
else ``DEFAULT_TIMEOUT_S`` (600 s). It bounds how long one rank waits for the others at each step,
so it must exceed the skew between ranks (a rank still writing its larger shard), not the whole
export's duration.
"""

from __future__ import annotations

import datetime
import math
import numbers
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import errors
from .._capture import first_line
from ..errors import (
    DistributedTimeoutError,
    ExportError,
    InvalidOptionError,
    ModelSaveError,
    WriteError,
)

DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "JMS_DISTRIBUTED_TIMEOUT"
T = TypeVar("T")


def check_timeout(value: Any) -> float:
    """Seconds to wait for the other ranks: ``value``, else ``$JMS_DISTRIBUTED_TIMEOUT``, else 600."""
    source = "timeout"
    if value is None:
        value = os.environ.get(TIMEOUT_ENV)
        if value is None:
            return DEFAULT_TIMEOUT_S
        source = TIMEOUT_ENV
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise InvalidOptionError(f"{source} must be a number of seconds > 0, got {value!r}.")
    return float(value)


@dataclass
class Collective:
    """One collective call: its process group, this rank, and how failures are shared."""

    group: Any
    rank: int
    world_size: int
    timeout: float
    what: str  # the call, for messages: "jms.export"

    @property
    def is_coordinator(self) -> bool:
        return self.rank == 0

    def agree(self, step: Callable[[], T]) -> list[T]:
        """Run ``step`` on every rank; return every rank's result, or raise on every rank.

        The rank whose step failed raises its own error (turned into a ``ModelSaveError``); the
        others raise an error of the same class naming that rank.
        """
        try:
            outcome: tuple[bool, Any] = (True, step())
        except BaseException as err:  # DCP's CheckpointException is a BaseException
            if not isinstance(err, Exception) and type(err).__name__ != "CheckpointException":
                raise
            outcome = (False, as_model_save_error(err))
        outcomes = self._all_gather(_portable(outcome))
        failed = [(rank, value) for rank, (ok, value) in enumerate(outcomes) if not ok]
        if failed:
            if not outcome[0]:
                raise outcome[1]
            raise _remote_error(*failed[0])
        return [value for _, value in outcomes]

    def from_coordinator(self, step: Callable[[], T]) -> T:
        """Run ``step`` on rank 0 only; every rank returns its result or raises its error."""
        return self.agree(lambda: step() if self.is_coordinator else None)[0]

    def _all_gather(self, value: Any) -> list[Any]:
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(gathered, value, group=self.group)
        except (RuntimeError, dist.DistError) as err:
            raise DistributedTimeoutError(
                f"{self.what}: rank {self.rank} did not hear from every rank within "
                f"{self.timeout:g} s ({first_line(err)}). Another rank failed, stopped or is much "
                f"slower. Pass a larger timeout= (or set {TIMEOUT_ENV}); after this error the "
                "process group may be unusable: restart the processes."
            ) from None
        return gathered


@contextmanager
def joined(what: str, timeout: float) -> Iterator[Collective]:
    """A ``Collective`` over every rank of the default process group, for the ``with`` block."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidOptionError(
            f"{what}: the model's weights are DTensors (sharded), but this process has no "
            "process group. Call it from every rank of the job that sharded the model (after "
            "torch.distributed.init_process_group)."
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, dist.DistError) as err:
        raise DistributedTimeoutError(
            f"{what} on a sharded model is collective: rank {rank} waited {timeout:g} s for the "
            f"other {world - 1} rank(s) to call it too ({first_line(err)}). Call it on every rank "
            f"with the same arguments, or pass a larger timeout= (or set {TIMEOUT_ENV})."
        ) from None
    try:
        yield Collective(group, rank, world, timeout, what)
        _settle(group)
    finally:
        dist.destroy_process_group(group)


def _settle(group: Any) -> None:
    """Wait until every rank is past the group's last collective, so that no rank tears the
    group down while a peer still receives from it (gloo can abort the process then). Only on a
    normal exit, which every rank reaches; a peer gone by now is ignored."""
    import torch.distributed as dist

    try:
        dist.barrier(group=group)
    except (RuntimeError, dist.DistError):
        pass


def as_model_save_error(err: BaseException) -> ModelSaveError:
    """``err`` as a ``ModelSaveError``: DCP's ``CheckpointException`` unwrapped to its first cause."""
    if isinstance(err, ModelSaveError):
        return err
    failures = getattr(err, "failures", None)
    if type(err).__name__ == "CheckpointException" and failures:
        rank, (cause, _) = sorted(failures.items(), key=lambda item: item[0])[0]
        inner = as_model_save_error(cause)
        return _build(type(inner), f"rank {rank}: {_message(inner)}", getattr(inner, "errno", None))
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return WriteError(
            err.errno,
            f"Could not write the sharded artifact: {err.strerror or err}{where}. Check the "
            "folder's permissions and free space; nothing was left behind.",
        )
    return ExportError(f"{type(err).__name__}: {first_line(err)}")


def _portable(outcome: tuple[bool, Any]) -> tuple[bool, Any]:
    """An outcome that pickles: a failure travels as (class name, message)."""
    ok, value = outcome
    if ok:
        return True, value
    return False, (type(value).__name__, _message(value), getattr(value, "errno", None))


def _remote_error(rank: int, failure: tuple[str, str, int | None]) -> ModelSaveError:
    kind, message, code = failure
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, ModelSaveError)):
        cls = ExportError
    error = _build(cls, f"rank {rank} failed: {message}", code)
    error.rank = rank  # type: ignore[attr-defined]
    return error


def _build(cls: type[ModelSaveError], message: str, code: int | None = None) -> ModelSaveError:
    if issubclass(cls, OSError) and code is not None:
        return cls(code, message)  # type: ignore[call-arg]
    try:
        return cls(message)
    except TypeError:
        return ExportError(message)


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror is not None:
        return str(error.strerror)
    return str(error)
