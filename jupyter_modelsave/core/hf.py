"""Hugging Face ``transformers`` models: what jms does differently for them, in one place.

- **The key/value cache is turned off for the export.** ``use_cache=True`` (the default of
  decoders such as GPT-2 and T5) makes ``forward`` return cache objects (``DynamicCache``,
  ``EncoderDecoderCache``) that neither ONNX exporter can trace. For one forward pass the cache
  holds nothing the outputs need, so while a model is staged every config it reaches gets
  ``use_cache=False`` (T5's encoder and decoder stacks keep their own copies of the config, so
  every submodule's ``config`` and every sub-config is set), and the stage's warnings say so.
  The configs are restored afterwards, also on failure: the live model is left as it was.
  Exports for generation with past key values are a separate task (e.g. Optimum's).
- **``ModelOutput``s become named outputs** (``logits``, ``last_hidden_state``, ...): its fields
  that are not None, in order. transformers 4.x registers ``ModelOutput`` with torch's pytree
  without the key-path function that ``tree_flatten_with_path`` needs, so ``outputs_as_dict``
  turns it into a plain dict first.

Nothing here imports ``transformers``: a model can only be a transformers model when
``transformers`` is already in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

CACHE_OFF_NOTE = (
    "transformers: use_cache=False during the export (the key/value cache is not exported; the "
    "artifact computes one forward pass without past key values), restored afterwards"
)


def is_transformers_model(model: Any) -> bool:
    """Whether ``model`` is, or holds, a ``transformers.PreTrainedModel`` (without importing
    transformers)."""
    if "transformers" not in sys.modules:
        return False
    base = getattr(sys.modules.get("transformers.modeling_utils"), "PreTrainedModel", None)
    return isinstance(base, type) and any(isinstance(m, base) for m in model.modules())


def _configs(model: Any) -> list[Any]:
    """Every distinct config the model's modules hold, with their sub-configs (text, vision...)."""
    found: dict[int, Any] = {}
    pending = [getattr(m, "config", None) for m in model.modules()]
    while pending:
        config = pending.pop()
        if config is None or id(config) in found or not hasattr(config, "to_dict"):
            continue
        found[id(config)] = config
        pending += [
            v for v in vars(config).values() if hasattr(v, "to_dict") and hasattr(v, "use_cache")
        ]
    return list(found.values())


@contextlib.contextmanager
def cache_off(model: Any) -> Iterator[list[str]]:
    """Within the block, every config of a transformers ``model`` has ``use_cache=False``.

    Yields the warnings to add to the stage (empty when nothing was changed); restores each
    config's own value on exit.
    """
    changed = []
    if is_transformers_model(model):
        changed = [c for c in _configs(model) if getattr(c, "use_cache", False) is True]
    for config in changed:
        config.use_cache = False
    try:
        yield [CACHE_OFF_NOTE] if changed else []
    finally:
        for config in changed:
            config.use_cache = True


def outputs_as_dict(output: Any) -> Any:
    """``output`` with every ``ModelOutput`` in it (at any depth of tuples, lists and dicts)
    turned into a plain dict of its fields that are set; containers without one unchanged."""
    if _is_model_output(output):
        return {k: outputs_as_dict(v) for k, v in output.items()}
    if isinstance(output, dict):
        items = {k: outputs_as_dict(v) for k, v in output.items()}
        return output if all(items[k] is v for k, v in output.items()) else items
    if isinstance(output, (tuple, list)):
        values = [outputs_as_dict(v) for v in output]
        if all(a is b for a, b in zip(values, output)):
            return output  # also keeps namedtuples and torch.return_types as they are
        return values if isinstance(output, list) else tuple(values)
    return output


def _is_model_output(value: Any) -> bool:
    output_class = getattr(sys.modules.get("transformers.utils.generic"), "ModelOutput", None)
    return isinstance(output_class, type) and isinstance(value, output_class)
