"""A guard for the reliability tests: a call that does not return in time is a hang."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def no_hang(seconds: int) -> Iterator[None]:
    """Raise ``TimeoutError`` in the main thread if the block still runs after ``seconds``."""

    def hang(*_: Any) -> None:
        raise TimeoutError(f"no answer after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
