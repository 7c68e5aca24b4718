"""Which ONNX values hold a module call's inputs and outputs, from the exporters' node names.

- **dynamo** records, per node, ``pkg.torch.onnx.name_scopes``: the qualified names of the
  modules the node was traced in, outer first (``['', 'blocks.0', 'blocks.0.lin', 'linear']``;
  the last entry is the node's own name). It does not tell two calls of one module apart.
- **TorchScript** names each node after its scope: ``/blocks.0/lin/Gemm``. A scope is a module's
  name relative to the enclosing scope (or its full name), and a module's later calls get a
  suffix counting its calls (``/act_1/Relu``: the second call of ``act``); two calls of an outer
  module may share one scope.

A module call's nodes are the nodes in its scope; with several calls and no suffixes they are
split evenly, in graph order (the exporters write nodes in the order the trace ran them). The
call's **outputs** are the values its nodes make that a node outside them (or the graph's
outputs) reads, and its **inputs** the values its nodes read from outside (initializers and
constants left out). A call is mapped only when those counts equal its tensors' counts in the
live model; shapes are checked after the run. Anything else stays unmapped (not compared).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ._calls import Call

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
STACK_TRACE = "pkg.torch.onnx.stack_trace"
MAX_NODES = 32  # node names kept per module (the ones making its outputs first)
_SUFFIX = re.compile(r"^(.*?)(?:_(\d+)|@(\d+))$")
_MAX_METADATA_CHARS = 100_000  # a name_scopes list longer than this is not parsed
# the modules a node was traced in, outer first: (name, call index when the exporter numbered it)
Scope = list[tuple[str, int | None]]


@dataclass
class Mapped:
    """The ONNX side of one module call."""

    outputs: list[str]  # value names, in the call's output order
    inputs: list[str] | None  # None: not matched (the input check is skipped)
    nodes: list[str] = field(default_factory=list)
    stack_traces: list[str] = field(default_factory=list)  # dynamo: of the output-making nodes


@dataclass
class _Graph:
    nodes: list[Any]
    producer: dict[str, int]
    consumers: dict[str, set[int]]
    outputs: set[str]
    constants: set[str]  # initializers and Constant outputs


def map_calls(graph: Any, calls: list[Call], output_names: list[str]) -> dict[int, Mapped]:
    """``{call position: Mapped}`` for the calls whose values can be told in ``graph``.

    ``output_names``: the artifact's output names, in the order of the model's output tensors
    (they are the model's own call, position 0).
    """
    g = _index(graph)
    names = {c.module for c in calls}
    scopes = [_scope_path(node, names) for node in g.nodes]
    mapped: dict[int, Mapped] = {}
    by_module: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        by_module[call.module].append(call)
    for module, module_calls in by_module.items():
        if module == "":
            continue
        chunks = _chunks(module, len(module_calls), scopes)
        for call, chunk in zip(module_calls, chunks or []):
            found = _mapped(g, chunk, call)
            if found is not None:
                mapped[call.position] = found
    root = next((c for c in calls if c.module == "" and c.index == 0), None)
    if root is not None and len(output_names) == len(root.outputs):
        everything = list(range(len(g.nodes)))
        mapped[root.position] = Mapped(
            list(output_names), None, _node_names(g, everything, output_names),
            _traces(g, output_names),
        )  # fmt: skip
    return mapped


def _index(graph: Any) -> _Graph:
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    consumers: dict[str, set[int]] = defaultdict(set)
    constants = {t.name for t in graph.initializer}
    for i, node in enumerate(nodes):
        for value in node.output:
            if value:
                producer[value] = i
                if node.op_type == "Constant":
                    constants.add(value)
        for value in _reads(node):
            consumers[value].add(i)
    return _Graph(nodes, producer, consumers, {o.name for o in graph.output}, constants)


def _reads(node: Any) -> list[str]:
    """A node's inputs, and the outer values its subgraphs (If, Loop, Scan bodies) read."""
    values = [v for v in node.input if v]
    for attribute in node.attribute:
        for sub in [attribute.g, *attribute.graphs] if attribute.type in (5, 10) else []:
            inner = {o for n in sub.node for o in n.output} | {i.name for i in sub.input}
            inner |= {t.name for t in sub.initializer}
            for n in sub.node:
                values += [v for v in _reads(n) if v not in inner]
    return values


def _scope_path(node: Any, modules: set[str]) -> Scope:
    """The modules a node was traced in, outer first, each with its call index when known."""
    scopes = _metadata(node, NAME_SCOPES)
    if scopes is not None:
        try:
            entries = ast.literal_eval(scopes) if len(scopes) < _MAX_METADATA_CHARS else []
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            entries = []
        if not isinstance(entries, list):
            entries = []
        return [_resolve(str(e), "", modules) for e in entries[:-1] if e]  # type: ignore[misc]
    path: Scope = []
    current = ""
    for part in node.name.split("/")[1:-1]:  # "/blocks.0/lin/Gemm": scopes, then the op
        found = _resolve(part, current, modules)
        if found[0] in modules:
            path.append(found)
            current = found[0]
    return [p for p in path if p[0] in modules]


def _resolve(part: str, parent: str, modules: set[str]) -> tuple[str, int | None]:
    """A scope name (full, or relative to ``parent``; maybe ``_<n>``/``@<n>``) -> (module, call)."""
    match = _SUFFIX.match(part)
    suffixed = [(match.group(1), int(match.group(2) or match.group(3)))] if match else []
    for base, index in [(part, None), *suffixed]:
        for name in (base, f"{parent}.{base}" if parent else base):
            if name in modules:
                return name, index
    return part, None


def _chunks(module: str, n_calls: int, scopes: list[Scope]) -> list[list[int]] | None:
    """The node indices of each call of ``module``, or None when they cannot be told apart."""
    members: list[tuple[int, int | None]] = [
        (i, dict(path)[module]) for i, path in enumerate(scopes) if any(m == module for m, _ in path)
    ]  # fmt: skip
    if not members:
        return None
    if n_calls == 1:
        return [[i for i, _ in members]]
    indices = {index or 0 for _, index in members}
    if len(indices) == n_calls:  # TorchScript numbered the calls
        return [[i for i, index in members if (index or 0) == k] for k in sorted(indices)]
    if len(members) % n_calls:
        return None
    size = len(members) // n_calls
    return [[i for i, _ in members[k * size : (k + 1) * size]] for k in range(n_calls)]


def _mapped(g: _Graph, chunk: list[int], call: Call) -> Mapped | None:
    inside = set(chunk)
    outputs: list[str] = []
    inputs: list[str] = []
    for i in chunk:
        node = g.nodes[i]
        for value in node.output:
            read_outside = any(c not in inside for c in g.consumers.get(value, ()))
            if value and value not in g.constants and (read_outside or value in g.outputs):
                outputs.append(value)
        for value in _reads(node):
            if g.producer.get(value) not in inside and value not in g.constants:
                inputs.append(value)
    inputs = list(dict.fromkeys(inputs))
    if not outputs or len(outputs) != len(call.outputs):
        return None
    matched_inputs = inputs if len(inputs) == len(call.inputs) and inputs else None
    return Mapped(outputs, matched_inputs, _node_names(g, chunk, outputs), _traces(g, outputs))


def _node_names(g: _Graph, chunk: list[int], outputs: list[str]) -> list[str]:
    """Up to ``MAX_NODES`` node names: those making ``outputs`` first, then the others in order
    (``Constant`` nodes left out: viewers show them as the values of the nodes reading them)."""
    makers = [g.producer[v] for v in outputs if v in g.producer]
    ordered = list(dict.fromkeys([*makers, *chunk]))
    kept = [g.nodes[i] for i in ordered if g.nodes[i].op_type != "Constant"]
    return [node.name for node in kept if node.name][:MAX_NODES]


def _traces(g: _Graph, outputs: list[str]) -> list[str]:
    traces = [_metadata(g.nodes[g.producer[v]], STACK_TRACE) for v in outputs if v in g.producer]
    return [t for t in traces if t]


def _metadata(node: Any, key: str) -> str | None:
    for prop in node.metadata_props:
        if prop.key == key:
            return prop.value
    return None
