"""``jms.load`` of a seq2seq generation artifact: its two ONNX Runtime sessions.

A causal LM's generation artifact is one ONNX graph and loads as any ONNX artifact (one
``onnxruntime.InferenceSession``); a seq2seq one is a folder with ``encoder_model.onnx`` and
``decoder_model.onnx`` and loads as ``Seq2SeqSessions(encoder, decoder)``. Each graph is opened
as the ONNX format opens a file (untrusted: checked first, no constant folding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from . import DECODER_FILE, ENCODER_FILE


class Seq2SeqSessions(NamedTuple):
    """The sessions of a seq2seq generation artifact."""

    encoder: Any  # onnxruntime.InferenceSession: input_ids, attention_mask -> last_hidden_state
    decoder: Any  # one step: input_ids, encoder_*, past_key_values.* -> logits, present.*


def load_seq2seq(fmt: Any, path: Path, map_location: Any, trusted: bool) -> Seq2SeqSessions:
    """Both sessions, each loaded by ``fmt`` (the ONNX format) from its graph in ``path``."""
    return Seq2SeqSessions(
        fmt.load(path / ENCODER_FILE, map_location, trusted),
        fmt.load(path / DECODER_FILE, map_location, trusted),
    )
