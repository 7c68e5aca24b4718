"""Generation-ready ONNX exports of ``transformers`` models: ``jms.stage(..., generation=True)``.

A single-forward export recomputes the whole sequence at every new token. A generation export
carries the key/value cache through the graph instead, under Optimum's names, so that a loop (or
a tool that knows those names) feeds one token at a time:

- **causal LMs** (``...ForCausalLM``, ``GPT2LMHeadModel``): one graph, inputs ``input_ids``,
  ``attention_mask``, ``position_ids`` (when ``forward`` takes them) and
  ``past_key_values.<i>.key`` / ``.value``; outputs ``logits`` and ``present.<i>.key`` /
  ``.value``. An empty past (length 0) is the first step.
- **seq2seq models** (``T5ForConditionalGeneration``, BART-like): a folder with
  ``encoder_model.onnx`` (``input_ids``, ``attention_mask`` -> ``last_hidden_state``) and
  ``decoder_model.onnx`` (``input_ids``, ``encoder_attention_mask``, ``encoder_hidden_states``,
  ``past_key_values.<i>.decoder.key`` / ``.value`` -> ``logits``, ``present.<i>.decoder.*``).

Parity adds a greedy loop of N steps with the artifact against the live model's ``generate``.
Modules: ``plan`` (which model, what shapes), ``wrappers`` (the with-past modules that are
exported), ``graphs`` (export through the ONNX format), ``loop`` (greedy loops), ``report``,
``parity``, ``staging`` and ``loading``. Nothing here imports ``transformers`` unless the model
is a transformers model.
"""

from __future__ import annotations

from pathlib import Path

from .plan import can_generate as can_generate  # for frameworks.torch

DEFAULT_STEPS = 8  # greedy steps compared with the live model's generate()
ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"


def is_seq2seq_folder(path: Path) -> bool:
    """Whether ``path`` is a seq2seq generation artifact (a folder with both graphs)."""
    return path.is_dir() and (path / ENCODER_FILE).exists() and (path / DECODER_FILE).exists()


def graph_file(artifact: Path, role: str = "decoder") -> Path:
    """The ONNX file of a graph (``"decoder"`` or ``"encoder"``) of an ONNX artifact: the file
    itself, a seq2seq folder's ``<role>_model.onnx``, and ``model.onnx`` inside a graph that is
    a folder because of its external data."""
    path = artifact
    if is_seq2seq_folder(artifact):
        path = artifact / (ENCODER_FILE if role == "encoder" else DECODER_FILE)
    return path / "model.onnx" if path.is_dir() else path
