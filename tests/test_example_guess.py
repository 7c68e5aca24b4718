"""The example input guessed from a model's first layer (issue 16.2: Stage without typing)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import jupyter_modelsave as jms
from jupyter_modelsave.core.example_guess import evaluate_example, guess_example

from . import models


class GRUTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 6)
        self.gru = nn.GRU(6, 5, batch_first=True)

    def forward(self, tokens):
        return self.gru(self.embed(tokens))[0]


CASES = {
    "Conv2d": (models.SmallCNN, "torch.randn(1, 3, 224, 224)"),
    "Linear": (models.mlp, "torch.randn(1, 8)"),
    "Embedding": (models.TinyTransformer, "torch.randint(0, 50, (1, 16))"),
    "LSTM, batch first": (models.Recurrent, "torch.randn(1, 16, 6)"),
    "GRU after an Embedding": (GRUTagger, "torch.randint(0, 30, (1, 16))"),
    "LSTM, sequence first": (lambda: nn.LSTM(4, 3), "torch.randn(16, 1, 4)"),
    "TransformerEncoder": (
        lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1),
        "torch.randn(1, 16, 8)",
    ),
    "Conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU()), "torch.randn(1, 2, 128)"),
    "BatchNorm2d first": (
        lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)),
        "torch.randn(1, 3, 224, 224)",
    ),
    "Flatten then Linear": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 2)),
        "torch.randn(1, 12)",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_first_layer_gives_an_example_the_model_runs_on(case):
    # Given a model never called
    build, expected = CASES[case]
    model = build().eval()
    # When an example is guessed from its first layer
    guess = guess_example(model)
    # Then it is the expected expression, its spec matches what it evaluates to, and it runs
    assert guess.expression == expected
    example = evaluate_example(guess.expression, {})
    assert (list(example.shape), str(example.dtype)) == (
        list(guess.spec.shape),
        f"torch.{guess.spec.dtype}",
    )
    with torch.no_grad():
        model(example)


def test_the_guess_follows_the_models_dtype_and_names_its_input():
    model = models.SmallCNN().to(torch.bfloat16)
    guess = guess_example(model)
    assert guess.expression == "torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)"
    assert (guess.spec.name, guess.spec.dtype, guess.layer) == ("image", "bfloat16", "Conv2d")


@pytest.mark.parametrize(
    "model",
    [models.TwoInputs(), nn.MultiheadAttention(8, 2), nn.Transformer(8, 2, 1, 1, 16), nn.ReLU()],
    ids=["two inputs", "attention (q, k, v)", "transformer (src, tgt)", "no layer with a size"],
)
def test_no_guess_when_the_first_layer_does_not_say(model):
    assert guess_example(model) is None


def test_find_models_offers_the_guess_only_until_a_call_is_recorded():
    net = models.mlp()
    (info,) = jms.find_models({"net": net})
    assert info.guessed_expression == "torch.randn(1, 8)"
    assert info.to_dict()["guessed_input"] == {
        "name": "input", "shape": [1, 8], "dtype": "float32", "device": "cpu"
    }  # fmt: skip
    net(torch.randn(3, 8))
    (info,) = jms.find_models({"net": net})
    assert info.guessed_expression is None and info.last_input[0].shape == (3, 8)


def test_a_guessed_example_stages_in_a_namespace_without_torch():
    # The expression names torch; the user may have imported it under another name
    net = models.SmallCNN().eval()
    example = evaluate_example(guess_example(net).expression, {"th": torch})
    staged = jms.stage(net, example)
    assert staged.report.passed and staged.input_specs[0].shape == (1, 3, 224, 224)
    staged.discard()
