"""The graphs of a generation export, exported through the ONNX format's own machinery.

Each graph is an ``ExportJob`` of a wrapper (``wrappers.py``) on synthetic inputs whose sizes
all differ (batch 2, sequence 7, past 5, encoder sequence 9), so the exporter keeps every
dynamic axis as its own symbol; ``OnnxFormat.export`` then does what it does for any model
(dynamo with the TorchScript fallback, the opset asked for, dynamic axes checked, metadata
embedded, ``onnx.checker``, external data over 2 GB).

Axes (Optimum's names): ``batch_size``, ``sequence_length``, ``past_sequence_length`` and
``total_sequence_length`` (``attention_mask``: past + new tokens; Optimum writes
``past_sequence_length + sequence_length``, which is no identifier) for causal LMs;
``encoder_sequence_length`` and ``past_decoder_sequence_length`` for seq2seq. The seq2seq
decoder takes one token per step: its ``input_ids`` are ``[batch_size, 1]`` (torch 2.13's
dynamo exporter cannot decompose T5's attention with a symbolic decoder length, and greedy
decoding never feeds more than one token).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..formats.base import Exported, ExportJob
from ..inputs import ExampleInputs
from ..model_state import preserved
from . import DECODER_FILE, ENCODER_FILE
from .plan import SEQ2SEQ, GenerationPlan
from .wrappers import CausalLMWithPast, Seq2SeqDecoderWithPast, Seq2SeqEncoder, parameter_name

BATCH, SEQUENCE, PAST, ENCODER_SEQUENCE = 2, 7, 5, 9  # the export's example sizes, all distinct
ARTIFACT_FOLDER = "artifact.onnx"


@dataclass
class Graph:
    """One graph of the artifact: its role, its wrapper and export job, and once exported, where
    it is."""

    role: str  # "decoder" or "encoder"
    module: torch.nn.Module
    job: ExportJob
    exported: Exported | None = None
    file: str | None = None  # its name in a seq2seq folder; None for a causal LM's one graph


def build_graphs(model: torch.nn.Module, plan: GenerationPlan, *, opset: int | None,
                 exporter: str, metadata: dict[str, Any], workdir: Path,
                 external_data: bool | None) -> list[Graph]:  # fmt: skip
    """The graphs to export, encoder first."""
    common = {"opset": opset, "exporter": exporter, "metadata": metadata,
              "external_data": external_data}  # fmt: skip
    device = next(iter(model.parameters())).device
    if plan.family != SEQ2SEQ:
        wrapper = CausalLMWithPast(model, plan)
        job = _job(wrapper, _causal_example(plan, device), plan.decoder_outputs,
                   _causal_axes(plan), workdir / "decoder", **common)  # fmt: skip
        return [Graph("decoder", wrapper, job)]
    encoder = Seq2SeqEncoder(model)
    decoder = Seq2SeqDecoderWithPast(model, plan)
    encoder_axes = {0: "batch_size", 1: "encoder_sequence_length"}
    return [
        Graph("encoder", encoder,
              _job(encoder, _encoder_example(plan, device), ["last_hidden_state"],
                   {n: dict(encoder_axes) for n in ("input_ids", "attention_mask",
                                                    "last_hidden_state")},
                   workdir / "encoder", **common), file=ENCODER_FILE),
        Graph("decoder", decoder,
              _job(decoder, _decoder_example(plan, device, model), plan.decoder_outputs,
                   _decoder_axes(plan), workdir / "decoder", **common), file=DECODER_FILE),
    ]  # fmt: skip


def export_graphs(graphs: list[Graph], workdir: Path) -> Exported:
    """Export every graph (``OnnxFormat.export``); return the artifact: the causal LM's graph,
    or a folder holding ``encoder_model.onnx`` and ``decoder_model.onnx``."""
    from ..formats.onnx import OnnxFormat

    fmt = OnnxFormat()
    for graph in graphs:
        graph.job.workdir.mkdir()
        with preserved(graph.module, hide_backward_hooks=True):
            graph.exported = fmt.export(graph.job)
    if len(graphs) == 1:
        return graphs[0].exported  # type: ignore[return-value]
    folder = workdir / ARTIFACT_FOLDER
    folder.mkdir()
    for graph in graphs:
        assert graph.exported is not None and graph.file is not None
        target = folder / graph.file
        os.replace(graph.exported.path, target)  # a file, or over 2 GB a folder of that name
        graph.exported.path = target
    done = [(g.role, g.exported) for g in graphs if g.exported is not None]
    return Exported(
        folder,
        "+".join(sorted({e.exporter for _, e in done})),
        done[-1][1].opset,
        [f"{role}: {w}" for role, e in done for w in e.warnings],
        value_conversions=[f"{role}: {c}" for role, e in done for c in e.value_conversions],
    )


def _job(module: torch.nn.Module, tensors: dict[str, torch.Tensor], output_names: list[str],
         axes: dict[str, dict[int, str]], workdir: Path, **common: Any) -> ExportJob:  # fmt: skip
    example = ExampleInputs(tuple(tensors.values()), {}, [parameter_name(n) for n in tensors])
    return ExportJob(module, example, list(tensors), output_names, axes, workdir=workdir, **common)


def _past(plan: GenerationPlan, device: torch.device, length: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shape = (BATCH, plan.kv_heads, length, plan.head_dim)
    dtype = getattr(torch, plan.kv_dtype)
    return {n: torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
            for n in plan.past_names}  # fmt: skip


def _tokens(plan: GenerationPlan, device: torch.device, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, plan.vocab_size, (BATCH, length), generator=gen).to(device)


def _causal_example(plan: GenerationPlan, device: torch.device) -> dict[str, torch.Tensor]:
    total = PAST + SEQUENCE
    tensors = {
        "input_ids": _tokens(plan, device, SEQUENCE),
        "attention_mask": torch.ones(BATCH, total, dtype=torch.long, device=device),
    }
    if plan.uses_position_ids:
        positions = torch.arange(PAST, total, device=device)
        tensors["position_ids"] = positions.expand(BATCH, SEQUENCE).contiguous()
    return {**tensors, **_past(plan, device, PAST)}


def _causal_axes(plan: GenerationPlan) -> dict[str, dict[int, str]]:
    new = {0: "batch_size", 1: "sequence_length"}
    axes = {"input_ids": new, "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "logits": new}  # fmt: skip
    if plan.uses_position_ids:
        axes["position_ids"] = new
    axes.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in plan.past_names})
    axes.update({n: {0: "batch_size", 2: "total_sequence_length"} for n in plan.present_names})
    return axes


def _encoder_example(plan: GenerationPlan, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "input_ids": _tokens(plan, device, ENCODER_SEQUENCE),
        "attention_mask": torch.ones(BATCH, ENCODER_SEQUENCE, dtype=torch.long, device=device),
    }


def _decoder_example(
    plan: GenerationPlan, device: torch.device, model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    states = torch.randn(BATCH, ENCODER_SEQUENCE, plan.hidden_size or 1, generator=gen)
    return {
        "input_ids": _tokens(plan, device, 1),
        "encoder_attention_mask": torch.ones(
            BATCH, ENCODER_SEQUENCE, dtype=torch.long, device=device
        ),
        "encoder_hidden_states": states.to(dtype=dtype, device=device),
        **_past(plan, device, PAST),
    }


def _decoder_axes(plan: GenerationPlan) -> dict[str, dict[int, str]]:
    encoder = {0: "batch_size", 1: "encoder_sequence_length"}
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch_size"},
        "encoder_attention_mask": encoder,
        "encoder_hidden_states": encoder,
        "logits": {0: "batch_size"},
    }
    axes.update({n: {0: "batch_size", 2: "past_decoder_sequence_length"} for n in plan.past_names})
    axes.update(
        {n: {0: "batch_size", 2: "total_decoder_sequence_length"} for n in plan.present_names}
    )
    return axes
