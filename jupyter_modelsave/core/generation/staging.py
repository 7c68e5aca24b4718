"""``jms.stage(model, generation=True)``: ``core.staging.stage`` hands generation exports here.

Same ``StagedExport`` (write, verify, discard, report), same atomic write and manifest; the
manifest adds ``generation`` (family, the cache's layout, each graph's file, inputs and outputs,
the greedy steps checked). Options: the format's capabilities must hold generation exports
(``"onnx"``'s do); the graphs' names and axes
are fixed (``input_names``, ``output_names`` and ``dynamic_axes`` are refused);
``generation_steps`` (default 8) sets the length of the greedy loops.

``example_inputs`` is the prompt: token ids (a ``[batch, length]`` integer tensor), a tuple
``(input_ids, attention_mask)``, or a dict with ``input_ids`` and optionally ``attention_mask``
(other keys, e.g. ``labels`` of a recorded training call, are left out and named in the
warnings). Without one, the last recorded call's, else a random prompt of 2 x 8 tokens.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..distributed import is_sharded
from ..errors import InvalidOptionError, shown, typed_errors
from ..formats.base import ArtifactFormat
from ..formats.onnx import OnnxFormat
from ..frameworks import adapter_for
from ..frameworks.torch import device_of
from ..inputs import TensorSpec
from ..job import Exported, ExportJob, Progress
from ..model_state import preserved, reference_mode
from ..options import check_flag, default_tolerances
from ..parity import ParityReport
from . import DEFAULT_STEPS
from .plan import GenerationPlan, check_family, make_plan

MAX_STEPS = 4096
DEFAULT_PROMPT = (2, 8)  # batch, tokens of the random prompt used when none is given or recorded


@dataclass
class GenerationJob(ExportJob):
    """The decoder graph's job (what ``StagedExport`` records), plus what parity needs."""

    live_model: Any = None
    plan: GenerationPlan | None = None
    graphs: list[Any] = field(default_factory=list)
    prompt: tuple[torch.Tensor, torch.Tensor] | None = None
    steps: int = DEFAULT_STEPS


class GenerationFormat(OnnxFormat):
    """ONNX, verified by per-graph probes and greedy loops (``parity.generation_parity``)."""

    def verify(self, exported: Exported, job: ExportJob, atol: float, rtol: float,
               progress: Progress) -> ParityReport:  # fmt: skip
        from .parity import generation_parity

        assert isinstance(job, GenerationJob) and job.plan is not None and job.prompt is not None
        return generation_parity(job.live_model, job.plan, job.graphs, exported.path, job.prompt,
                                 job.steps, atol, rtol, progress, exported.value_conversions)  # fmt: skip


def generation_parts(model: Any, example_inputs: Any, fmt: ArtifactFormat, *, opset: int | None,
                     exporter: str, external_data: bool | None, metadata: dict[str, Any],
                     name: str, atol: float | None, rtol: float | None, parity: Any, device: Any,
                     progress: Progress, fixed: dict[str, Any],
                     generation_steps: Any = DEFAULT_STEPS, **format_options: Any) -> Any:  # fmt: skip
    """``jms.stage(..., generation=True)``, after ``core.staging.stage`` has checked the options
    every stage takes (exporter, opset, metadata, name, tolerances): see this module. Checks and
    plans here; returns ``build(workdir)``: the ``StagedExport``'s arguments, which staging makes."""

    if is_sharded(model):
        raise InvalidOptionError(
            "generation=True exports a model held by one process; this one is sharded "
            "(DTensor weights). Export its weights with format='safetensors', load them into an "
            "unsharded copy, and stage that copy for generation."
        )
    family = check_family(model)
    _check_format(fmt, format_options)
    _refuse_fixed_names(**fixed)
    steps = check_steps(generation_steps)
    parity = check_flag("parity", parity)
    if "generation" in metadata:
        raise InvalidOptionError("metadata keys ['generation'] are reserved; rename them.")
    adapter = adapter_for(model)  # PyTorch's (``check_family``)
    model, _ = adapter.placed(model, None, device)
    adapter.check_ready(model, True)
    ids, mask, notes = prompt_of(model, example_inputs)
    default_atol, default_rtol = default_tolerances(adapter.float_dtype(model))
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    with preserved(model), reference_mode(), typed_errors("trial run", "onnx"):
        plan = make_plan(model, family, ids, mask)
    fmt = GenerationFormat()

    def build(workdir: Path) -> tuple:
        from .graphs import build_graphs, export_graphs

        graph_meta = {**metadata, "generation": json.dumps({"family": family, **plan.to_dict()})}
        graphs = build_graphs(model, plan, opset=opset, exporter=exporter, metadata=graph_meta,
                              workdir=workdir, external_data=external_data)  # fmt: skip
        progress("export", 0.1)
        with typed_errors("export", fmt.name):
            exported = export_graphs(graphs, workdir)
        main = graphs[-1].job  # the decoder's
        job = GenerationJob(**{f: getattr(main, f) for f in ExportJob.__dataclass_fields__},
                            live_model=model, plan=plan, graphs=graphs, prompt=(ids, mask),
                            steps=steps)  # fmt: skip
        job.workdir = workdir
        report = None
        if parity:
            progress("parity", 0.6)
            with typed_errors("parity check", fmt.name):
                report = fmt.verify(exported, job, atol, rtol, progress)
        return (fmt, exported, job, report, name, [*notes, *exported.warnings],
                _output_specs(graphs[-1]), (atol, rtol),
                generation_manifest(plan, graphs, steps if parity else None))  # fmt: skip

    return build


def _check_format(fmt: ArtifactFormat, format_options: dict[str, Any]) -> None:
    """A format with ``Capabilities.generation`` (ONNX), and none of its own options."""
    if not fmt.capabilities.generation:
        raise InvalidOptionError(
            f"generation=True exports ONNX graphs with past key values; format={shown(fmt.name)} "
            "cannot hold them. Use format='onnx', or leave generation out for this format."
        )
    if format_options:
        raise InvalidOptionError(
            f"format {fmt.name!r} with generation=True takes no option(s) "
            f"{', '.join(sorted(format_options))} (its own: generation_steps)."
        )


def _refuse_fixed_names(**given: Any) -> None:
    wrong = [k for k, v in given.items() if v is not None]
    if wrong:
        raise InvalidOptionError(
            f"{', '.join(wrong)} cannot be set with generation=True: the graphs' inputs, "
            "outputs and dynamic axes have fixed (Optimum's) names. Leave them out."
        )


def check_steps(steps: Any) -> int:
    integral = isinstance(steps, numbers.Integral) and not isinstance(steps, bool)
    if not (integral and 1 <= steps <= MAX_STEPS):
        raise InvalidOptionError(
            f"generation_steps must be an integer from 1 to {MAX_STEPS}, got {shown(steps)}."
        )
    return int(steps)


def prompt_of(model: torch.nn.Module, example: Any) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(input_ids, attention_mask, notes)`` on the model's device, checked."""
    from ..discovery import last_inputs

    notes: list[str] = []
    if example is None:
        recorded = last_inputs(model)
        if recorded is not None:
            named = recorded.by_name()
            example = named if "input_ids" in named else tuple(recorded.tensors)
            notes.append("example inputs: the last recorded forward call's input_ids")
    if example is None:
        vocab = _vocab_size(model)
        gen = torch.Generator().manual_seed(0)
        example = torch.randint(0, vocab, DEFAULT_PROMPT, generator=gen)
        notes.append(
            f"example inputs: a random prompt of {DEFAULT_PROMPT[0]} x {DEFAULT_PROMPT[1]} tokens "
            "(none given or recorded)"
        )
    ids, mask, left_out = _split_prompt(example)
    if left_out:
        notes.append(f"prompt: inputs other than input_ids and attention_mask left out: "
                     f"{', '.join(left_out)}")  # fmt: skip
    ids, mask = _check_prompt(ids, mask, _vocab_size(model))
    device = torch.device(device_of(model))
    return ids.to(device), mask.to(device), notes


def _split_prompt(example: Any) -> tuple[Any, Any, list[str]]:
    if isinstance(example, dict):
        if "input_ids" not in example:
            raise InvalidOptionError(
                f"The prompt dict has no 'input_ids' (keys: {', '.join(map(str, example))}); "
                "pass {'input_ids': ids, 'attention_mask': mask}."
            )
        rest = [str(k) for k in example if k not in ("input_ids", "attention_mask")]
        return example["input_ids"], example.get("attention_mask"), rest
    if isinstance(example, (tuple, list)):
        if not 1 <= len(example) <= 2:
            raise InvalidOptionError(
                f"A prompt tuple is (input_ids,) or (input_ids, attention_mask), got "
                f"{len(example)} items."
            )
        return example[0], example[1] if len(example) == 2 else None, []
    return example, None, []


def _check_prompt(ids: Any, mask: Any, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    help_text = "pass token ids as a [batch, length] integer tensor, e.g. tokenizer(...).input_ids"
    tokens = isinstance(ids, torch.Tensor) and not (ids.is_floating_point() or ids.is_complex())
    if not tokens or ids.dtype == torch.bool:
        raise InvalidOptionError(f"The prompt must be token ids: {help_text}; got {shown(ids)}.")
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.numel() == 0:
        raise InvalidOptionError(
            f"The prompt has shape {list(ids.shape)}; {help_text} (at least one token)."
        )
    ids = ids.long()
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise InvalidOptionError(
            f"The prompt holds token ids from {int(ids.min())} to {int(ids.max())}, outside the "
            f"model's vocabulary of {vocab}; pass ids from its tokenizer."
        )
    if mask is None:
        return ids, torch.ones_like(ids)
    if isinstance(mask, torch.Tensor) and mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(ids.shape):
        raise InvalidOptionError(
            f"attention_mask must be a tensor of the prompt's shape {list(ids.shape)}, got "
            f"{shown(mask)}."
        )
    mask = mask.long()
    if not bool(((mask == 0) | (mask == 1)).all()) or not bool((mask.sum(dim=1) > 0).all()):
        raise InvalidOptionError(
            "attention_mask must hold 0 (padding) and 1 (token), with at least one token per row."
        )
    return ids, mask


def _vocab_size(model: torch.nn.Module) -> int:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.vocab_size)


def _output_specs(graph: Any) -> list[TensorSpec]:
    """The decoder graph's outputs on its export example (one more run of the wrapper)."""
    with preserved(graph.module), reference_mode():
        outputs = graph.module(*graph.job.example.args)
    return [TensorSpec.of(n, t) for n, t in zip(graph.job.output_names, outputs)]


def generation_manifest(plan: GenerationPlan, graphs: list[Any], steps: int | None) -> dict[str, Any]:  # fmt: skip
    """The manifest's ``generation`` field: what a loop needs to run the artifact."""
    return {
        "family": plan.family,
        "plan": plan.to_dict(),
        "greedy_steps_checked": steps,
        "graphs": {
            g.role: {
                "file": g.file,
                "inputs": g.job.input_names,
                "outputs": g.job.output_names,
                "dynamic_axes": {
                    n: {str(d): a for d, a in axes.items()}
                    for n, axes in g.job.dynamic_axes.items()
                },
            }
            for g in graphs
        },
    }
