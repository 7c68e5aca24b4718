"""An example input guessed from a PyTorch model's first layer, for models never called yet.

The sidebar and the widget offer it as an editable Python expression, so a model defined but not
run can be staged without typing: ``Conv2d(3, ...)`` gives ``torch.randn(1, 3, 224, 224)``,
``Linear(20, ...)`` ``torch.randn(1, 20)``, ``Embedding(1000, ...)`` ``torch.randint(0, 1000, (1,
16))``. "First layer" is the first module, in registration order (``model.modules()``), that
fixes the input's shape; activations, dropout, pooling and containers are skipped. The guess
reads module attributes only (no forward pass), so it can be wrong for a model whose first
registered layer is not the first one called: the expression is then edited, and staging says
why the forward pass failed.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .inputs import TensorSpec

SEQUENCE = 16  # the sequence length of guessed token and sequence inputs
IMAGE = 224  # the side of guessed images (Conv2d), as most vision models are trained
SIGNAL = 128  # the length of guessed Conv1d signals
VOLUME = (16, 112, 112)  # depth, height, width of guessed Conv3d volumes


@dataclass(frozen=True)
class ExampleGuess:
    """A guessed example input: the expression to evaluate in the kernel and its tensor's spec."""

    expression: str
    spec: TensorSpec
    layer: str  # the module the guess was read from, e.g. "Conv2d"


def guess_example(model: Any) -> ExampleGuess | None:
    """The example input ``model``'s first layer implies, or None when no layer says.

    None too when ``forward`` needs more than one tensor (the guess is one tensor).
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module) or _required_inputs(model) > 1:
        return None
    for module in model.modules():
        shape = _input_shape(torch.nn, module)
        if shape is not None:
            return _guess(torch, model, module, shape)
    return None


def _input_shape(nn: Any, m: Any) -> tuple[tuple[int, ...], int | None] | None:
    """(shape, token range) of the input ``m`` takes, or None when ``m`` does not fix it."""
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return (1, SEQUENCE), m.num_embeddings
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
        return (1, m.in_channels, SIGNAL), None
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        return (1, m.in_channels, IMAGE, IMAGE), None
    if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
        return (1, m.in_channels, *VOLUME), None
    if isinstance(m, nn.Linear):
        return (1, m.in_features), None
    if isinstance(m, nn.RNNBase):
        return _sequence(m.batch_first, m.input_size), None
    if isinstance(m, (nn.TransformerEncoder, nn.Transformer)):
        return None  # an encoder: its first layer follows in modules(); nn.Transformer: 2 inputs
    if isinstance(m, nn.TransformerEncoderLayer):
        return _sequence(m.self_attn.batch_first, m.self_attn.embed_dim), None
    if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        return (1, m.num_features, IMAGE, IMAGE), None
    if isinstance(m, (nn.BatchNorm1d, nn.InstanceNorm1d)):
        return (1, m.num_features), None
    if isinstance(m, nn.LayerNorm):
        return (1, SEQUENCE, *m.normalized_shape), None
    return None


def _sequence(batch_first: bool, features: int) -> tuple[int, ...]:
    return (1, SEQUENCE, features) if batch_first else (SEQUENCE, 1, features)


def _guess(
    torch: Any, model: Any, layer: Any, found: tuple[tuple[int, ...], int | None]
) -> ExampleGuess:
    from .inputs import TensorSpec, float_dtype, input_names_for

    shape, tokens = found
    device = next((str(p.device) for p in model.parameters()), "cpu")
    dims = ", ".join(map(str, shape))
    if tokens is not None:
        dtype = "int64"
        call = f"torch.randint(0, {tokens}, ({dims}{',' if len(shape) == 1 else ''}))"
    else:
        dtype = float_dtype(model)
        call = f"torch.randn({dims}{'' if dtype == 'float32' else f', dtype=torch.{dtype}'})"
    if device != "cpu":
        call = f"{call[:-1]}, device={device!r})"
    name = input_names_for(model, 1, [])[0]
    return ExampleGuess(call, TensorSpec(name, shape, dtype, device), type(layer).__name__)


def _required_inputs(model: Any) -> int:
    """How many positional arguments ``forward`` needs (those without a default)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def evaluate_example(expression: str, namespace: dict[str, Any]) -> Any:
    """Evaluate an example-input expression in the user's namespace, with ``torch`` available
    even when the namespace did not import it under that name (guessed expressions use it)."""
    if "torch" not in namespace and "torch" in sys.modules:
        namespace = {**namespace, "torch": sys.modules["torch"]}
    return eval(expression, namespace)  # the user's own kernel and namespace
