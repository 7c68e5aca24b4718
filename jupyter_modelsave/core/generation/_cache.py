"""transformers' key/value cache objects, to and from flat tensors, on 4.x and 5.x.

Both lines build a ``DynamicCache`` from ``(key, value)`` pairs (``ddp_cache_data``; older
releases: ``from_legacy_cache``) and wrap self- and cross-attention caches in an
``EncoderDecoderCache``. What a model returns is read from the cache's ``layers`` (4.56 and
later), its ``key_cache``/``value_cache`` lists (earlier 4.x) or legacy tuples of tuples.
"""

from __future__ import annotations

from typing import Any

import torch

Pairs = list[tuple[torch.Tensor, torch.Tensor]]


def dynamic_cache(pairs: Pairs) -> Any:
    """A ``DynamicCache`` holding ``pairs`` (one ``(key, value)`` per layer)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=pairs)
    except TypeError:  # a release without ddp_cache_data
        return DynamicCache.from_legacy_cache(tuple(pairs))


def encoder_decoder_cache(self_attention: Pairs) -> Any:
    """An ``EncoderDecoderCache``: the decoder's past, and an empty cross-attention cache (the
    model computes the cross-attention keys/values from ``encoder_hidden_states``)."""
    from transformers import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(dynamic_cache(self_attention), DynamicCache())


def returned_cache(output: Any, cache_arg: str) -> Any:
    """The cache in a model's output (the field is named after ``forward``'s cache argument)."""
    for name in (cache_arg, "past_key_values", "cache"):
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


def self_attention_layers(cache: Any) -> Pairs:
    """``(key, value)`` per layer of a cache; of an encoder-decoder cache, its self-attention."""
    if cache is None:
        return []
    cache = getattr(cache, "self_attention_cache", cache)
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(layer[0], layer[1]) for layer in cache]  # legacy tuples (k, v[, cross k, cross v])
