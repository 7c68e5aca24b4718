"""Shared helpers for the benchmarks: models built in code, best-of-N timing, a ratio line."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()  # fmt: skip


class Transformer(nn.Module):
    def __init__(self, vocab: int = 1000, dim: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=4 * dim, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


def transformer() -> nn.Module:
    return Transformer().eval()


CASES = {
    "cnn": (cnn, lambda: torch.randn(2, 3, 32, 32), {0: "batch"}),
    "transformer": (transformer, lambda: torch.randint(0, 1000, (2, 16)), {0: "batch", 1: "seq"}),
}


def median_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of ``repeat`` calls, in seconds (after the caller's own warm-up)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating(
    first: Callable[[], object], second: Callable[[], object], rounds: int = 9
) -> tuple[float, float]:
    """Median wall times of ``first`` and ``second`` run in turn, ``rounds`` times each.

    Alternating spreads the load of other processes on a shared machine over both.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, out in zip((first, second), times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])
