"""Tiny models for the distributed tests, built the same way in the test process and on every rank."""

from __future__ import annotations

import torch
from torch import nn

MAX_SHARD_SIZE = 100  # bytes: these tiny models still span several files


def mlp(seed: int = 0, hidden: int = 5) -> nn.Sequential:
    """Linear(6, hidden) -> ReLU -> Linear(hidden, 3), plus a plain buffer ``scale``.

    5 rows shard unevenly: 3 + 2 over two ranks, 2 + 2 + 1 + 0 over four.
    """
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    model.register_buffer("scale", torch.arange(3.0) + seed)
    return model


def wider(seed: int = 0) -> nn.Sequential:
    return mlp(seed, hidden=7)


class Tied(nn.Module):
    """An embedding and an output head sharing one weight, in bfloat16."""

    tied = True

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def tied(seed: int = 0) -> Tied:
    torch.manual_seed(seed)
    return Tied().to(torch.bfloat16)
