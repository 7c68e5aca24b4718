"""The Comm protocol is defined once (``jupyter_modelsave/protocol.py``): the TypeScript mirror
(``src/protocol.ts``) declares the same types, and every message the kernel side sends is one."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
import torch

from jupyter_modelsave import kernel as jk
from jupyter_modelsave import protocol

from . import models

TS = (Path(__file__).parents[1] / "src" / "protocol.ts").read_text()
TYPED_DICTS = {
    name: value
    for name, value in vars(protocol).items()
    if isinstance(value, type) and is_typeddict(value) and value.__module__ == protocol.__name__
}


def ts_type(annotation: Any) -> str:
    """The TypeScript type ``src/protocol.ts`` must declare for a Python protocol type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return "unknown"
    if origin in (Union, types.UnionType):
        return " | ".join(ts_type(a) for a in args)
    if origin is Literal:
        return " | ".join(f"'{a}'" for a in args)
    if origin is list:
        inner = ts_type(args[0])
        return f"({inner})[]" if "|" in inner else f"{inner}[]"
    if origin is dict:
        return f"{{ [key: string]: {ts_type(args[1])} }}"
    if is_typeddict(annotation):
        return f"I{annotation.__name__}"
    return {str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}[annotation]  # fmt: skip


def ts_interfaces() -> dict[str, dict[str, tuple[bool, str]]]:
    """Each exported interface (and ``Record<string, never>`` type) of the mirror: its fields as
    name -> (optional?, type)."""
    found: dict[str, dict[str, tuple[bool, str]]] = {}
    for name, body in re.findall(r"export interface (\w+) \{\n(.*?)\n  \}", TS, re.S):
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)  # doc comments may hold any text
        body = re.sub(r";\s*\}", " }", " ".join(body.split()))  # prettier may wrap a long type
        fields = re.findall(r"(\w+)(\??): ((?:[^;{}]|\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})+);", body)
        found[name] = {f: (optional == "?", kind.strip()) for f, optional, kind in fields}
    for name in re.findall(r"export type (\w+) = Record<string, never>;", TS):
        found[name] = {}
    return found


def test_the_typescript_protocol_mirrors_the_python_one() -> None:
    # Given every type of protocol.py and every interface of src/protocol.ts
    mirrored = ts_interfaces()
    operations = mirrored.pop("IOperations")
    # Then each Python type has its interface, with the same fields, optionality and JSON types
    assert set(mirrored) == {f"I{name}" for name in TYPED_DICTS}
    for name, typed in TYPED_DICTS.items():
        expected = {
            field: (field in typed.__optional_keys__, ts_type(kind))
            for field, kind in get_type_hints(typed).items()
        }
        assert mirrored[f"I{name}"] == expected, name
    # And the operations map the same arguments to the same replies
    assert operations == {
        op: (False, f"{{ args: I{args.__name__}; reply: I{reply.__name__} }}")
        for op, (args, reply) in protocol.OPERATIONS.items()
    }
    assert get_args(protocol.Op) == tuple(protocol.OPERATIONS)


def test_the_field_table_is_read_from_the_argument_types() -> None:
    # The kernel side checks what the protocol declares: a flag may be left out, never null
    assert jk.FIELDS is protocol.FIELDS
    assert protocol.FIELDS["stage"]["opset"] == "integer?"
    assert protocol.FIELDS["stage"]["dynamic_axes"] == "dynamic axes?"
    assert protocol.FIELDS["write"]["overwrite"] == "boolean"
    assert {"overwrite", "allow_mismatch", "generation", "latency"} == protocol.OPTIONAL_NOT_NULL


def conforms(value: Any, annotation: Any, where: str = "message") -> None:
    """Assert that a JSON value is of the protocol type ``annotation`` (no field more or less)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return
    if origin in (Union, types.UnionType):
        failures = []
        for option in args:
            try:
                conforms(value, option, where)
                return
            except AssertionError as err:
                failures.append(str(err))
        raise AssertionError(f"{where}: {value!r} is none of {args}: {failures}")
    if origin is Literal:
        assert value in args, (where, value)
    elif origin is list:
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            conforms(item, args[0], f"{where}[{i}]")
    elif origin is dict:
        assert isinstance(value, dict), where
        for key, item in value.items():
            conforms(item, args[1], f"{where}.{key}")
    elif is_typeddict(annotation):
        assert isinstance(value, dict), where
        assert annotation.__required_keys__ <= set(value) <= set(get_type_hints(annotation)), (
            where,
            sorted(value),
        )
        for key, kind in get_type_hints(annotation).items():
            if key in value:
                conforms(value[key], kind, f"{where}.{key}")
    elif annotation is float:
        assert type(value) in (int, float), (where, value)
    elif annotation is type(None):
        assert value is None, where
    else:
        assert type(value) is annotation, (where, value)


@pytest.fixture
def side(tmp_path: Path) -> jk.ModelSaveKernel:
    namespace = {"net": models.SmallCNN(), "mlp": models.mlp(), "torch": torch,
                 "branchy": models.DataDependentBranch()}  # fmt: skip
    return jk.ModelSaveKernel(namespace, tmp_path / "staging", tmp_path)


def test_every_message_the_kernel_side_sends_is_what_the_protocol_says(side, monkeypatch):
    # Given a kernel side, and every message it sends recorded
    sent: list[dict[str, Any]] = []

    def ask(op: str, args: dict[str, Any]) -> Any:
        reply = side.respond({"id": op, "op": op, "args": args}, sent.append)
        assert reply["ok"], reply
        return reply["result"]

    # When each operation is asked for, a stage (with its progress) included, and one fails
    ask("models", {})
    side.namespace["net"](torch.randn(2, 3, 8, 8))
    ask("options", {})
    staged = ask("stage", {"model": "net", "dynamic_axes": {"image": {"0": "batch"}}})
    ask("stage", {"model": "mlp", "format": "safetensors", "precision": "fp16"})
    ask("write", {"id": staged["id"], "folder": "out"})
    # (an fp16 variant: agreement and latency; compared with the version just written)
    variant = ask("stage", {"model": "net", "precision": "fp16", "latency": True})
    assert variant["variant"]["from"] == "fp32" and variant["latency"]["runs"] >= 1
    assert variant["report"]["agreement"]["outputs"]
    assert ask("diff", {"id": variant["id"], "folder": "out"})["diff"]["compared"] == "outputs"
    assert ask("diff", {"id": variant["id"]}) == {"diff": None}
    # (a branch baked into the graph: parity fails, and the report localizes it)
    baked = ask("stage", {"model": "branchy", "example": "torch.rand(2, 4) + 2",
                          "exporter": "torchscript"})  # fmt: skip
    assert baked["report"]["first_divergence"] and baked["report"]["layers"]
    ask("discard", {"id": staged["id"]})
    side.respond({"id": 7, "op": "discard", "args": {"id": staged["id"]}}, sent.append)
    fake = type("Comm", (), {"on_msg": lambda s, f: None, "on_close": lambda s, f: None,
                             "send": lambda s, m: sent.append(m)})()  # fmt: skip
    monkeypatch.setattr(jk, "_INSTANCE", side)
    jk._on_comm_open(fake, {})
    # Then every event is one of the protocol's, and every result its operation's reply
    kinds = {"progress": protocol.ProgressEvent, "reply": protocol.ReplyEvent,
             "ready": protocol.ReadyEvent}  # fmt: skip
    for message in sent:
        conforms(message, kinds[message["event"]])
        if message["event"] == "reply" and message["ok"]:
            conforms(message["result"], protocol.OPERATIONS[message["id"]][1], message["id"])
    assert {m["event"] for m in sent} == set(kinds)
    assert [m["ok"] for m in sent if m["event"] == "reply"][-1] is False
