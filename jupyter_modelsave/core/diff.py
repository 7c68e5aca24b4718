"""What changed since the last version: a staged export against the newest artifact of its name.

``compare(staged, dest)`` looks in the folder ``dest`` for the newest artifact of the same name
(``list_artifacts``: by creation time, then version) and returns:

- ``previous_version``, ``previous_path``, ``previous_sha256``;
- ``size_ratio``: this artifact's size over the previous one's;
- ``signature_changed``: ``{field: {"before", "after"}}`` for each of ``inputs``, ``outputs``
  (names, dtypes, shapes with dynamic dims shown by their axis names), ``dynamic_axes``,
  ``opset``, ``format`` and ``precision`` that differs (empty when none does; a field the
  previous manifest does not record, e.g. ``precision`` before it existed, is not compared);
- ``max_abs`` / ``cosine``: between the two artifacts' outputs on this stage's parity probes
  (graph formats: ONNX, TorchScript, ``.pt2``), or between their weights (weight formats,
  tensors of the same name and shape); the largest absolute difference and the least cosine
  similarity over every output and probe. ``compared`` says which (``None``: not compared, and
  ``notes`` says why: another kind of format, a program you did not sign, over
  ``VALUES_MAX_BYTES``, an artifact changed since it was written, ...);
- ``warnings``: size over ``SIZE_GROWTH``x or under ``SIZE_SHRINK``x, signature changes, and
  drift (cosine below ``DRIFT_COSINE``).

The previous artifact is opened with ``jms.load`` (its sha256 is checked against its manifest;
only your own signed programs are run), on the model's device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._capture import first_line
from .errors import ModelSaveError

SIZE_GROWTH = 1.5
SIZE_SHRINK = 0.67
DRIFT_COSINE = 0.99
VALUES_MAX_BYTES = 2 * 1024**3  # above this, values are not compared (both would be in memory)
GRAPH_FORMATS = ("onnx", "torchscript", "torch_export")
SIGNATURE_FIELDS = ("inputs", "outputs", "dynamic_axes", "opset", "format", "precision")


def previous_artifact(folder: str | Path, name: str) -> Any:
    """The newest ``ArtifactInfo`` of ``name`` in ``folder``, or None (no folder, no such name)."""
    from .catalog import list_artifacts

    try:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            return None
    except (OSError, ValueError):
        return None
    return next((a for a in list_artifacts(folder) if a.name == name), None)


def compare(staged: dict[str, Any], parts: tuple, previous: Any) -> dict[str, Any]:
    """The differences between a staged export and ``previous`` (an ``ArtifactInfo``): ``staged``
    holds its manifest fields that ``signature`` reads and ``size_bytes``, ``parts`` its format,
    ``Exported`` and ``ExportJob`` (``StagedExport._signature_fields`` and ``_parts``)."""
    from .manifest import read_manifest

    try:
        before = read_manifest(previous.path) or {}
    except ModelSaveError:
        before = {}
    ratio = staged["size_bytes"] / previous.size_bytes if previous.size_bytes else None
    changed = signature_changes(before, signature(staged))
    result: dict[str, Any] = {
        "previous_version": previous.version,
        "previous_path": str(previous.path),
        "previous_sha256": previous.sha256,
        "size_ratio": None if ratio is None else round(ratio, 4),
        "signature_changed": changed,
        "max_abs": None,
        "cosine": None,
        "compared": None,
        "notes": [],
        "problems": [],
    }
    result.update(_values(staged, parts, previous))
    result["warnings"] = _warnings(result, staged, previous)
    del result["problems"]  # now in the warnings
    return result


def signature(fields: dict[str, Any]) -> dict[str, Any]:
    """The comparable signature of a manifest's fields."""
    axes = fields.get("dynamic_axes") or {}
    found = {key: fields.get(key) for key in SIGNATURE_FIELDS}
    found.update(inputs=_tensors(found["inputs"], axes), outputs=_tensors(found["outputs"], axes))
    return {**found, "dynamic_axes": axes}


def signature_changes(before_manifest: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    before = signature(before_manifest)
    return {
        key: {"before": before[key], "after": after[key]}
        for key in SIGNATURE_FIELDS
        if key in before_manifest and before[key] != after[key]
    }


def _tensors(specs: Any, axes: dict[str, Any]) -> list[Any]:
    """``name dtype [dims]`` per tensor, a dynamic dim shown by its axis name."""
    if not isinstance(specs, list):
        return []
    found = []
    for spec in specs:
        if not isinstance(spec, dict):
            continue
        name = spec.get("name")
        dynamic = axes.get(name, {}) if isinstance(axes, dict) else {}
        shape = spec.get("shape") if isinstance(spec.get("shape"), list) else []
        dims = [dynamic.get(str(d), size) if isinstance(dynamic, dict) else size
                for d, size in enumerate(shape)]  # fmt: skip
        found.append({"name": name, "dtype": spec.get("dtype"), "shape": dims})
    return found


def _values(staged: dict[str, Any], parts: tuple, previous: Any) -> dict[str, Any]:
    """``max_abs``, ``cosine``, ``compared``, ``notes`` and ``problems``: outputs or weights."""
    from .formats.base import WeightsFormat

    fmt, exported, job = parts
    graph = staged["format"] in GRAPH_FORMATS and previous.format in GRAPH_FORMATS
    weights = isinstance(fmt, WeightsFormat) and previous.format in _WEIGHT_FORMATS
    if not (graph or weights):
        return {"notes": [f"values not compared: a {previous.format} artifact and a "
                          f"{staged['format']} one hold different things"]}  # fmt: skip
    if max(staged["size_bytes"], previous.size_bytes) > VALUES_MAX_BYTES:
        return {"notes": [f"values not compared: over {VALUES_MAX_BYTES / 1024**3:g} GiB"]}
    if graph and not job.input_names:
        return {"notes": ["values not compared: this stage ran without example inputs"]}
    try:
        from .loading import load

        old = load(previous.path, map_location=job.adapter.device_of(job.model))
        if graph:
            return _graph_stats(fmt.runner(exported, job), job, old)
        return _weight_stats(fmt.weights(fmt.load(exported.path, trusted=True)), previous, old)
    except Exception as err:  # the comparison is advice: it never stops a stage or a write
        return {"notes": [f"values not compared: {type(err).__name__}: {first_line(err)}"]}


_WEIGHT_FORMATS = ("safetensors", "state_dict", "checkpoint")


class _Stats:
    """The largest |difference| and the least cosine over every compared tensor."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.cosine = 1.0
        self.count = 0
        self.worst = ""  # where the least cosine was seen
        self.problems: list[str] = []

    def add(self, where: str, current: Any, previous: Any) -> None:
        """Compare two arrays (a shape change is a problem, not compared)."""
        from .parity import compare_output

        if current.shape != previous.shape:
            self.problems.append(
                f"{where}: shape {list(previous.shape)} became {list(current.shape)}"
            )
            return
        diff = compare_output(where, previous, current, 0.0, 0.0)
        self.count += 1
        self.max_abs = max(self.max_abs, diff.max_abs)
        if not diff.cosine >= self.cosine:  # NaN counts as worst
            self.cosine, self.worst = diff.cosine, where

    def result(self, compared: str) -> dict[str, Any]:
        if not self.count:
            return {"notes": [f"values not compared: no {compared} in common"],
                    "problems": self.problems}  # fmt: skip
        return {"max_abs": self.max_abs, "cosine": self.cosine, "compared": compared,
                "worst": self.worst, "problems": self.problems}  # fmt: skip


def _graph_stats(run_new: Any, job: Any, old: Any) -> dict[str, Any]:
    """Both artifacts' outputs on this stage's parity probes."""
    from .verify import probes_for

    run_old = _runner_of(old, job)
    stats = _Stats()
    for probe_name, probe in probes_for(job).items():
        new = run_new(probe)
        try:
            before = run_old(probe)
        except Exception as err:  # the previous artifact's runtime: many types
            stats.problems.append(f"probe {probe_name!r}: the previous version cannot run it "
                                  f"({type(err).__name__}: {first_line(err)})")  # fmt: skip
            continue
        for name, current, prior in _paired(new, before):
            stats.add(f"{name!r} on {probe_name!r}", current, prior)
    return stats.result("outputs")


def _paired(new: dict[str, Any], old: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Outputs matched by name, else (when no name is shared and the counts agree) by position."""
    shared = [n for n in new if n in old]
    if shared:
        return [(n, new[n], old[n]) for n in shared]
    if len(new) == len(old):
        return [(n, new[n], old[o]) for n, o in zip(new, old)]
    return []


def _runner_of(old: Any, job: Any) -> Any:
    """A function running the previous artifact on a probe, returning numpy outputs by name."""
    import numpy as np
    import torch

    from . import _ort
    from .frameworks.torch import flatten_outputs, to_numpy

    if hasattr(old, "get_inputs"):  # an ONNX Runtime session
        names = [i.name for i in old.get_inputs()]

        def run_session(probe: Any) -> dict[str, Any]:
            given = dict(zip(job.input_names, probe.tensors))
            tensors = ([given[n] for n in names] if all(n in given for n in names)
                       else list(probe.tensors)[: len(names)])  # fmt: skip
            feeds = {n: np.asarray(t.detach().cpu().numpy()) for n, t in zip(names, tensors)}
            return _ort.run_named(old, feeds)

        return run_session
    module = old.module() if hasattr(old, "module") and hasattr(old, "graph_signature") else old

    def run_module(probe: Any) -> dict[str, Any]:
        with torch.no_grad():
            names, tensors = flatten_outputs(module(*probe.args, **probe.kwargs))
        named = job.output_names if len(job.output_names) == len(tensors) else names
        return {n: to_numpy(t) for n, t in zip(named, tensors)}

    return run_module


def _weight_stats(now: dict[str, Any], previous: Any, old: Any) -> dict[str, Any]:
    """The two artifacts' tensors of the same name (each as float, so a cast compares too)."""
    from .formats import get_format
    from .frameworks.torch import to_numpy

    before = get_format(previous.format, "torch").weights(old)
    stats = _Stats()
    for name in (n for n in now if n in before):
        stats.add(repr(name), to_numpy(now[name].float()), to_numpy(before[name].float()))
    added, removed = sorted(set(now) - set(before)), sorted(set(before) - set(now))
    if added or removed:
        stats.problems.append(f"{len(added)} tensors added {added[:5]}, {len(removed)} removed "
                              f"{removed[:5]}")  # fmt: skip
    return stats.result("weights")


def _warnings(result: dict[str, Any], staged: dict[str, Any], previous: Any) -> list[str]:
    version = previous.version
    warnings = []
    ratio = result["size_ratio"]
    if ratio is not None and (ratio > SIZE_GROWTH or ratio < SIZE_SHRINK):
        grew = "grew" if ratio > 1 else "shrank"
        warnings.append(
            f"size {grew}: {ratio:.2f}x version {version} ({previous.size_bytes:,} -> "
            f"{staged['size_bytes']:,} bytes); check that this is intended."
        )
    for key, change in result["signature_changed"].items():
        warnings.append(
            f"{key} changed since version {version}: {change['before']!r} -> {change['after']!r}; "
            "code that calls the artifact may need changes."
        )
    cosine = result["cosine"]
    if cosine is not None and not cosine >= DRIFT_COSINE:
        warnings.append(
            f"{result['compared']} drifted since version {version}: cosine {cosine:.4f}, max abs "
            f"difference {result['max_abs']:.3g} (worst: {result.get('worst')}); expected after "
            "training, a surprise otherwise."
        )
    warnings += [f"since version {version}: {p}" for p in result["problems"]]
    return warnings


def for_manifest(result: dict[str, Any]) -> dict[str, Any]:
    """The ``previous`` entry of a manifest: the result with the path made a file name."""
    from .parity import _json_safe

    entry = {"version": result["previous_version"], "path": Path(result["previous_path"]).name,
             "sha256": result["previous_sha256"]}  # fmt: skip
    entry.update({k: v for k, v in result.items() if not k.startswith("previous_")})
    return _json_safe(entry)
