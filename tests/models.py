"""Small models built in code (random init) that cover the shapes of real ones."""

from __future__ import annotations

import torch
from torch import nn


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Linear(8, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(6, 3)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.a(left) + self.b(right)


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"logits": h, "probs": h.softmax(-1)}


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=6, hidden_size=5, batch_first=True)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(seq)
        return out


class DataDependentBranch(nn.Module):
    """A Python `if` on tensor values: tracing bakes in the branch the example takes."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.min() > 1:
            return self.lin(x) * 2
        return -self.lin(x)


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(tokens)))


class KeywordModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, *, scale: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * scale


class Untraceable(nn.Module):
    """Complex eigenvalues: neither ONNX exporter has a conversion for them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x).real


class TiedLM(nn.Module):
    """A language-model head tied to the embedding (one tensor under two names)."""

    def __init__(self, vocab: int = 40, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(self.embed(tokens))))


class SignBranch(nn.Module):
    """Issue 15's branch: one linear map for positive sums, another (x10) for the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.a(x)
        return self.b(x) * 10


class Tagger(nn.Module):
    """Token ids -> Embedding -> LSTM or GRU -> per-token tag scores."""

    def __init__(self, cell: type[nn.Module] = nn.LSTM, vocab: int = 30, tags: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.rnn = cell(8, 8, batch_first=True)
        self.out = nn.Linear(8, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.embed(tokens))[0])


class TokensAndMask(nn.Module):
    """Two inputs sharing batch and sequence: token ids and an attention mask."""

    def __init__(self, vocab: int = 30) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return (self.embed(input_ids) * attention_mask.unsqueeze(-1)).sum(1)


class Attention(nn.Module):
    """Self-attention through scaled_dot_product_attention (ONNX: opset 14 and up)."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        out = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return out.transpose(1, 2).reshape(b, n, d)


class MaskedMean(nn.Module):
    """A float sequence averaged over the positions a boolean mask keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        weights = keep.unsqueeze(-1).to(x.dtype)
        return (self.lin(x) * weights).sum(1) / weights.sum(1).clamp(min=1)


class Positional(nn.Module):
    """Learned position embeddings: the sequence length is capped at ``max_len`` (as in BERT)."""

    def __init__(self, vocab: int = 20, dim: int = 8, max_len: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.register_buffer("position_ids", torch.arange(max_len), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens) + self.positions(self.position_ids[: tokens.shape[1]])


class FixedBatch(nn.Module):
    """Reshapes to a constant batch of 2: a dynamic batch axis cannot be kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1).sum(-1)
