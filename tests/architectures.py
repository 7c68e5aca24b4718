"""Real architectures at toy size, built in code (random init, no hub): the README's table.

Each ``Architecture`` builds ``(model, example_inputs)`` and names its dynamic axes. The
transformers models come from small configs (hidden 32, 2 layers, vocabulary 100); the CNNs are
hand-written equivalents of torchvision's ResNet-18 and MobileNetV3-small (torchvision does not
install with the pinned CPU torch); the Keras models are those of ``tests/keras/models.py``.
Used by ``tests/hf/``, ``tests/test_architectures.py`` and ``scripts/architecture_table.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

VOCAB, HIDDEN, LAYERS, HEADS, MAX_POSITIONS = 100, 32, 2, 2, 64
BATCH, SEQ = 2, 16


@dataclass(frozen=True)
class Architecture:
    name: str
    framework: str  # "torch" or "keras"
    build: Callable[[], tuple[Any, Any]]  # -> (model, example_inputs)
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    source: str = ""  # what it stands for


def _tokens(seed: int = 0, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, seq), generator=torch.Generator().manual_seed(seed))


def _text_inputs(seq: int = SEQ) -> dict[str, torch.Tensor]:
    return {
        "input_ids": _tokens(0, seq),
        "attention_mask": torch.ones(BATCH, seq, dtype=torch.long),
    }


TEXT_AXES = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}


# --- transformers -------------------------------------------------------------------------


def bert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
        max_position_embeddings=MAX_POSITIONS,
    )  # fmt: skip
    return transformers.BertModel(config).eval(), _text_inputs()


def gpt2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=MAX_POSITIONS,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval(), _text_inputs()


def t5() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=2 * HIDDEN,
        num_layers=LAYERS, num_heads=HEADS, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1,
    )  # fmt: skip
    example = {**_text_inputs(), "decoder_input_ids": _tokens(1, SEQ // 2)}
    return transformers.T5ForConditionalGeneration(config).eval(), example


T5_AXES = {**TEXT_AXES, "decoder_input_ids": {0: "batch", 1: "decoder_seq"}}


def vit() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=HIDDEN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
    )  # fmt: skip
    pixels = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return transformers.ViTModel(config).eval(), {"pixel_values": pixels}


def distilbert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import transformers

    torch.manual_seed(0)
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=2 * HIDDEN,
        max_position_embeddings=MAX_POSITIONS,
    )  # fmt: skip
    return transformers.DistilBertModel(config).eval(), _text_inputs()


# --- recurrent taggers over token ids ------------------------------------------------------


class Tagger(nn.Module):
    """Embedding -> LSTM or GRU -> per-token tag scores."""

    def __init__(self, cell: type[nn.RNNBase], tags: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.rnn = cell(HIDDEN, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def lstm_tagger() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Tagger(nn.LSTM).eval(), _tokens()


def gru_tagger() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Tagger(nn.GRU).eval(), _tokens()


# --- CNNs (torchvision's shapes, written out) ----------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18Like(nn.Module):
    """torchvision's ResNet-18 layout (stem, 4 stages of 2 basic blocks, pool, fc), 1/8 width."""

    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )  # fmt: skip
        blocks, cin = [], width
        for i, cout in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(
            torch.flatten(nn.functional.adaptive_avg_pool2d(self.stages(self.stem(image)), 1), 1)
        )


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(scale))))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: 1x1 expand, depthwise kxk, optional squeeze-excite, 1x1 project."""

    def __init__(self, cin: int, expand: int, cout: int, kernel: int, stride: int, se: bool,
                 act: type[nn.Module]) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        if expand != cin:
            layers += [nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), act()]
        layers += [
            nn.Conv2d(expand, expand, kernel, stride, kernel // 2, groups=expand, bias=False),
            nn.BatchNorm2d(expand), act(),
        ]  # fmt: skip
        if se:
            layers.append(SqueezeExcite(expand, max(8, expand // 4)))
        layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV3Like(nn.Module):
    """torchvision's MobileNetV3-small layout (hardswish, squeeze-excite), first blocks only."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        hs, relu = nn.Hardswish, nn.ReLU
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), hs(),
            InvertedResidual(16, 16, 16, 3, 2, True, relu),
            InvertedResidual(16, 72, 24, 3, 2, False, relu),
            InvertedResidual(24, 88, 24, 3, 1, False, relu),
            InvertedResidual(24, 96, 40, 5, 2, True, hs),
            nn.Conv2d(40, 96, 1, bias=False), nn.BatchNorm2d(96), hs(),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Linear(96, 128), hs(), nn.Linear(128, classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.features(image), 1)
        return self.classifier(torch.flatten(pooled, 1))


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randn(BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def resnet18_like() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return ResNet18Like().eval(), _image()


def mobilenetv3_like() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return MobileNetV3Like().eval(), _image()


# --- Keras -------------------------------------------------------------------------------


def keras_cnn() -> tuple[Any, Any]:
    from .keras import models

    return models.cnn(), models.array(2, 8, 8, 3)


def keras_two_inputs() -> tuple[Any, Any]:
    from .keras import models

    return models.two_inputs()


IMAGE_AXES = {"image": {0: "batch"}}
TRANSFORMERS = [
    Architecture("BERT", "torch", bert, TEXT_AXES, "transformers BertModel"),
    Architecture("GPT-2", "torch", gpt2, TEXT_AXES, "transformers GPT2LMHeadModel"),
    Architecture("T5", "torch", t5, T5_AXES, "transformers T5ForConditionalGeneration"),
    Architecture("ViT", "torch", vit, {"pixel_values": {0: "batch"}}, "transformers ViTModel"),
    Architecture("DistilBERT", "torch", distilbert, TEXT_AXES, "transformers DistilBertModel"),
]
ARCHITECTURES = [
    *TRANSFORMERS,
    Architecture("LSTM tagger", "torch", lstm_tagger, {"tokens": {0: "batch", 1: "seq"}},
                 "nn.Embedding + nn.LSTM + nn.Linear"),
    Architecture("GRU tagger", "torch", gru_tagger, {"tokens": {0: "batch", 1: "seq"}},
                 "nn.Embedding + nn.GRU + nn.Linear"),
    Architecture("ResNet-18-like", "torch", resnet18_like, IMAGE_AXES,
                 "torchvision resnet18's layout, 1/8 width"),
    Architecture("MobileNetV3-like", "torch", mobilenetv3_like, IMAGE_AXES,
                 "torchvision mobilenet_v3_small's blocks"),
    Architecture("Keras CNN", "keras", keras_cnn, {"image": {0: "batch"}},
                 "tests/keras/models.py cnn (Sequential)"),
    Architecture("Keras two inputs", "keras", keras_two_inputs, {},
                 "tests/keras/models.py TwoInputs (subclassed, dict output)"),
]  # fmt: skip
BY_NAME = {a.name: a for a in ARCHITECTURES}
