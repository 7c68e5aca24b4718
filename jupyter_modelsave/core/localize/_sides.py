"""The artifact's side of the comparison, per format.

- **ONNX**: a copy of the graph whose extra outputs are the values mapped to module calls
  (``_onnx_scopes``), in one ONNX Runtime session; each batch of calls is one ``run`` that
  fetches only that batch's values. The copy is made from the staged file's graph: a
  single-file artifact is serialized in memory; a folder artifact's weights stay in its external
  data file, which the session maps (no copy).
- **torch.export** (``.pt2``): the reloaded program, unflattened back into its module hierarchy
  (``torch.export.unflatten``), with forward hooks on its submodules (same qualified names).
- **TorchScript**: the reloaded archive's submodules, by qualified name, each called on its live
  counterpart's inputs (``_compare.in_isolation``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _ort
from ..frameworks.torch import to_numpy
from ..inputs import ExampleInputs
from ._calls import Call, tensors_in
from ._compare import ArtifactCall
from ._onnx_scopes import Mapped, map_calls


class OnnxSide:
    """The staged ONNX graph with every mapped value exposed, run in one session."""

    def __init__(self, path: Path, calls: list[Call], input_names: list[str],
                 output_names: list[str]) -> None:  # fmt: skip
        import onnx

        folder = path if path.is_dir() else None
        model_file = path / "model.onnx" if folder else path
        model = onnx.load(str(model_file), load_external_data=False)
        self.mapped: dict[int, Mapped] = map_calls(model.graph, calls, output_names)
        present = {o.name for o in model.graph.output}
        wanted = {v for m in self.mapped.values() for v in [*m.outputs, *(m.inputs or [])]}
        graph_inputs = {i.name for i in model.graph.input}
        for name in sorted(wanted - present - graph_inputs):
            model.graph.output.append(onnx.ValueInfoProto(name=name))
        self._session = _ort.session(
            model.SerializeToString(), map_weights=bool(folder), spin=False, external_folder=folder
        )
        del model
        self._input_names = input_names
        self._graph_inputs = graph_inputs

    def calls(self, probe: ExampleInputs, wanted: list[Call]) -> dict[int, ArtifactCall]:
        mapped = {c.position: self.mapped[c.position] for c in wanted if c.position in self.mapped}
        if not mapped:
            return {}
        feeds = {
            name: t.detach().cpu().numpy()
            for name, t in zip(self._input_names, probe.tensors)
            if name in self._graph_inputs
        }
        fetch = list(dict.fromkeys(
            v for m in mapped.values() for v in [*m.outputs, *(m.inputs or [])]
            if v not in self._graph_inputs
        ))  # fmt: skip
        values = dict(zip(fetch, self._session.run(fetch, feeds)))
        values.update(feeds)
        return {
            position: ArtifactCall(
                [values[v] for v in m.outputs],
                None if m.inputs is None else [values[v] for v in m.inputs],
            )
            for position, m in mapped.items()
        }


class ProgramSide:
    """A reloaded ``.pt2`` program, unflattened, with hooks on its submodules."""

    def __init__(self, program: Any) -> None:
        from torch.export import unflatten

        self.module = unflatten(program)
        self.submodules = dict(self.module.named_modules())

    def calls(self, probe: ExampleInputs, wanted: list[Call]) -> dict[int, ArtifactCall]:
        positions = {(c.module, c.index): c.position for c in wanted}
        got: dict[int, ArtifactCall] = {}
        counts: dict[str, int] = defaultdict(int)
        seen_inputs: dict[int, list[np.ndarray]] = {}
        handles = []

        def pre(name: str, args: tuple, kwargs: dict) -> None:
            position = positions.get((name, counts[name]))
            if position is not None:
                seen_inputs[position] = [to_numpy(t) for t in tensors_in((args, kwargs))]

        def post(name: str, result: Any) -> None:
            position = positions.get((name, counts[name]))
            counts[name] += 1
            if position is not None:
                got[position] = ArtifactCall([to_numpy(t) for t in tensors_in(result)],
                                             seen_inputs.pop(position, None))  # fmt: skip

        try:
            for name, sub in self.submodules.items():
                handles.append(sub.register_forward_pre_hook(
                    lambda m, a, k, name=name: pre(name, a, k), with_kwargs=True))  # fmt: skip
                handles.append(sub.register_forward_hook(
                    lambda m, a, r, name=name: post(name, r)))  # fmt: skip
            with torch.no_grad():
                self.module(*probe.args, **probe.kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return got


def torchscript_counterpart(module: Any) -> Any:
    """``name -> the archive's submodule`` (None when it has no ``forward`` to call)."""
    submodules = dict(module.named_modules())

    def counterpart(name: str) -> Any:
        sub = submodules.get(name)
        if sub is None or not sub._c._has_method("forward"):
            return None
        return sub

    return counterpart
