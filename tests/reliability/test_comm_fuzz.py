"""The sidebar's Comm protocol: whatever arrives, one clear error reply, and the kernel side goes on.

Fuzzed with hypothesis at ``ModelSaveKernel.respond`` (derandomized, like tests/test_properties.py),
then over a real ipykernel: junk, an oversized request and out-of-order requests, a stage that still
works after them, and staged exports removed when the Comm closes and when the kernel shuts down.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_client.session import json_packer

import jupyter_modelsave as jms
from jupyter_modelsave import _paths
from jupyter_modelsave import kernel as jk

from .. import models

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
# every error a reply may name: the package's errors, and the interrupt
ERROR_TYPES = {name for name in jms.__all__ if name.endswith("Error")} | {"Cancelled"}
STAGE_MLP = {"model": "mlp", "example": "torch.randn(2, 8)"}
ARG_KEYS = [
    "model", "example", "format", "opset", "exporter", "atol", "rtol", "name", "dynamic_axes",
    "id", "folder", "version", "overwrite", "allow_mismatch", "colour",
]  # fmt: skip


class _Opaque:
    """A value no JSON encoder knows."""


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


HUGE = 10**4000  # parses from JSON (under Python's 4300-digit limit), far beyond JS numbers
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Cf", "Co", "Lo"]), max_size=8),
    st.sampled_from(["mlp", "nope", "../x", "/abs", "a\x00b", "", "onnx", "torch.randn(2, 8)"]),
    st.sampled_from([HUGE, -HUGE, 2**53, -(2**53), 5e-324, 1e308, -0.0, "\ud800", "a\u202eb",
                     "..\\..\\x", "x" * 5000, "exit()", "(_ for _ in ()).throw(SystemExit)",
                     "(_ for _ in ()).throw(GeneratorExit)", "__import__('sys').exit(3)"]),
    st.integers(min_value=30, max_value=2000).map(_nested),  # nested past MAX_DEPTH
)  # fmt: skip
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
not_json = st.one_of(
    st.just(float("nan")),
    st.just(float("inf")),
    st.binary(max_size=8),
    st.sets(st.integers(), max_size=3),
    st.builds(_Opaque),
    st.just({(1, 2): "tuple key"}),
)
any_value = st.one_of(json_value, not_json)
known_ops = st.sampled_from(jk.ModelSaveKernel.OPERATIONS)
json_args = st.dictionaries(st.sampled_from(ARG_KEYS), json_value, max_size=5)
stage_args = st.fixed_dictionaries(
    {"model": st.sampled_from(["mlp", "gone", "torch"])},
    optional={
        "format": st.one_of(st.sampled_from(["safetensors", "onnx", "pickle", ""]), json_value),
        "opset": json_value,
        "atol": json_value,
        "name": json_value,
        "example": json_value,
        "dynamic_axes": json_value,
    },
)
quick_stage = st.fixed_dictionaries(  # mostly valid: stages that succeed happen too
    {"model": st.just("mlp"), "format": st.sampled_from(["safetensors", "state_dict"])},
    optional={"name": json_value},
)
write_args = st.fixed_dictionaries(  # "LIVE": replaced by the id of an export staged by then
    {"id": st.one_of(st.just("LIVE"), json_value)},
    optional={
        "folder": st.one_of(st.sampled_from(["out", "a/b", "", "./x", ".hidden"]), json_value),
        "name": json_value,
        "version": st.one_of(st.sampled_from(["1.0.0", "2.3.4"]), json_value),
        "overwrite": json_value,
        "allow_mismatch": json_value,
    },
)
discard_args = st.fixed_dictionaries({"id": st.one_of(st.just("LIVE"), json_value)})
messages = st.one_of(
    any_value,  # not an object at all
    st.fixed_dictionaries({}, optional={"id": any_value, "op": any_value, "args": any_value}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": known_ops, "args": any_value}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": known_ops, "args": json_args}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": st.just("stage"), "args": stage_args}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": st.just("stage"), "args": quick_stage}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": st.just("write"), "args": write_args}),
    st.fixed_dictionaries({"id": any_value, "op": st.just("discard"), "args": discard_args}),
)


def make_side(tmp_path: Path) -> jk.ModelSaveKernel:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    namespace = {"mlp": models.mlp(), "torch": torch}
    return jk.ModelSaveKernel(namespace, tmp_path / "staging", root)


@pytest.fixture
def side(tmp_path: Path) -> Iterator[jk.ModelSaveKernel]:
    side = make_side(tmp_path)
    yield side
    side.discard_all()


def ask(side: jk.ModelSaveKernel, message: Any) -> dict[str, Any]:
    """Send one request; check the protocol's shape (progress..., exactly one reply, all JSON)."""
    sent: list[dict[str, Any]] = []
    reply = side.respond(message, sent.append)
    assert sent and sent[-1] is reply
    assert [m["event"] for m in sent[:-1]] == ["progress"] * (len(sent) - 1)
    assert reply["event"] == "reply"
    for m in sent:
        assert _on_the_wire(m)  # everything sent must cross the Comm
    rid = message.get("id") if isinstance(message, dict) else None
    if isinstance(rid, str) and len(rid) <= 200 and rid.isascii():
        assert reply["id"] == rid
    if not reply["ok"]:
        error = reply["error"]
        assert error["type"] in ERROR_TYPES, error
        assert isinstance(error["message"], str) and len(error["message"]) > 10, error
    return reply


def _on_the_wire(message: dict[str, Any]) -> bytes:
    """``message`` as the kernel's session sends it (jupyter_client's packer, no lenient fallback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the packer's fallback for non-JSON content warns
        return json_packer(message)


def stage_works(side: jk.ModelSaveKernel) -> None:
    """The kernel side still does its job: a normal stage succeeds and is published."""
    reply = ask(side, {"id": "ok", "op": "stage", "args": STAGE_MLP})
    assert reply["ok"], reply
    sid = reply["result"]["id"]
    assert (side.staging_dir / sid / reply["result"]["file"]).is_file()
    assert ask(side, {"id": "d", "op": "discard", "args": {"id": sid}})["ok"]


def published(side: jk.ModelSaveKernel) -> set[str]:
    if not side.staging_dir.exists():
        return set()
    return {p.name for p in side.staging_dir.iterdir()}


def test_fuzzed_messages_get_one_clear_reply_and_the_kernel_side_goes_on(tmp_path: Path) -> None:
    side = make_side(tmp_path)
    seen = {"ok": 0, "error": 0, "written": 0}

    @SETTINGS
    @given(message=messages)
    def fuzz(message: Any) -> None:
        args = message.get("args") if isinstance(message, dict) else None
        if isinstance(args, dict) and args.get("id") == "LIVE":
            message = {**message, "args": {**args, "id": next(iter(side.staged), "none")}}
        reply = ask(side, message)
        seen["ok" if reply["ok"] else "error"] += 1
        # published folders are exactly the live staged exports (none half-made, none orphaned)
        assert published(side) == set(side.staged)
        # a write lands below the root, and only with flags that are JSON booleans
        if reply["ok"] and message["op"] == "write":
            seen["written"] += 1
            assert (side.root_dir / reply["result"]["path"]).resolve().is_relative_to(side.root_dir)
            assert all(
                isinstance(args.get(f, False), bool) for f in ("overwrite", "allow_mismatch")
            )

    try:
        fuzz()
        assert seen["error"] > 50 and seen["ok"] > 5 and seen["written"] > 0  # all paths reached
        assert {p.name for p in tmp_path.iterdir()} == {"root", "staging"}  # nothing elsewhere
        assert published(side) == set(side.staged)
        stage_works(side)
    finally:
        side.discard_all()
    assert published(side) == set()


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ([1, 2, 3], "must be an object"),
        ("stage", "must be an object"),
        (None, "must be an object"),
        ({}, "operation name"),
        ({"id": "r", "args": {}}, "operation name"),
        ({"id": "r", "op": 7}, "operation name"),
        ({"id": "r", "op": "rm -rf"}, "Unknown operation"),
        ({"id": "r", "op": "__init__"}, "Unknown operation"),
        ({"id": "r", "op": "respond"}, "Unknown operation"),
        ({"id": "r", "op": "stage", "args": ["mlp"]}, "must be an object"),
        ({"id": "r", "op": "stage", "args": {"model": {"x": 1}}}, "'model' must be a string"),
        ({"id": "r", "op": "stage", "args": {"model": "nope"}}, "No variable"),
        ({"id": "r", "op": "stage", "args": {}}, "needs the field 'model'"),
        (
            {"id": "r", "op": "stage", "args": {"model": "mlp", "colour": "red"}},
            "no field 'colour'",
        ),
        ({"id": "r", "op": "stage", "args": {"model": "mlp", "opset": "abc"}}, "opset"),
        ({"id": "r", "op": "stage", "args": {"model": "mlp", "example": 5}}, "'example' must be"),
        ({"id": "r", "op": "write", "args": {"id": 5}}, "'id' must be a string"),
        ({"id": "r", "op": "write", "args": {"id": "0" * 32}}, "stage it again"),
        ({"id": "r", "op": "stage", "args": {"model": float("nan")}}, "plain JSON"),
        ({"id": "r", "op": "stage", "args": {"model": b"mlp"}}, "plain JSON"),
        ({"id": "r", "op": "models", "args": {"x": {1, 2}}}, "plain JSON"),
    ],
)
def test_malformed_requests_are_answered_with_the_reason(
    side: jk.ModelSaveKernel, message: Any, says: str
) -> None:
    reply = ask(side, message)
    assert reply["ok"] is False
    assert says in reply["error"]["message"]


def test_an_oversized_request_is_refused(side: jk.ModelSaveKernel) -> None:
    # Given a request just over the 1 MiB limit, and one just under it
    pad = "x" * jk.MAX_MESSAGE_BYTES
    over = ask(side, {"id": "big", "op": "models", "args": {}, "pad": pad})
    under = ask(side, {"id": "ok", "op": "models", "args": {}, "pad": pad[:-100]})
    # Then the big one is refused with the limit named, the other one is answered
    assert over["ok"] is False and over["id"] == "big"
    assert "over the limit" in over["error"]["message"]
    assert under["ok"] is True
    stage_works(side)


def test_out_of_order_requests_are_refused_and_change_nothing(side: jk.ModelSaveKernel) -> None:
    never = _paths.new_staging_id()
    # write and discard before any stage
    for op, says in (("write", "stage it again"), ("discard", "Nothing to discard")):
        reply = ask(side, {"id": op, "op": op, "args": {"id": never}})
        assert reply["ok"] is False and says in reply["error"]["message"]
    # a stage, a discard, then a second discard and a write after the discard
    staged = ask(side, {"id": "s", "op": "stage", "args": STAGE_MLP})
    sid = staged["result"]["id"]
    assert ask(side, {"id": "d1", "op": "discard", "args": {"id": sid}})["ok"]
    again = ask(side, {"id": "d2", "op": "discard", "args": {"id": sid}})
    assert again["ok"] is False and "already discarded" in again["error"]["message"]
    late = ask(side, {"id": "w", "op": "write", "args": {"id": sid, "folder": "out"}})
    assert late["ok"] is False and "stage it again" in late["error"]["message"]
    assert not (side.root_dir / "out").exists()
    # a stage of a variable deleted since the model list was sent
    del side.namespace["mlp"]
    gone = ask(side, {"id": "g", "op": "stage", "args": {"model": "mlp"}})
    assert gone["ok"] is False and "run the cell that defines it" in gone["error"]["message"]
    side.namespace["mlp"] = models.mlp()
    stage_works(side)
    assert published(side) == set()


def test_discard_of_another_kernels_export_touches_nothing(side: jk.ModelSaveKernel) -> None:
    # Given a published folder of another kernel in the same staging folder
    other = side.staging_dir / _paths.new_staging_id()
    other.mkdir(parents=True)
    (other / "index.json").write_text("{}")
    # When this kernel side is asked to discard it
    reply = ask(side, {"id": "x", "op": "discard", "args": {"id": other.name}})
    # Then it refuses, and the folder is still there
    assert reply["ok"] is False
    assert (other / "index.json").exists()


def test_a_result_the_comm_cannot_carry_is_answered_as_an_error(
    side: jk.ModelSaveKernel,
) -> None:
    # Given an operation that (by a bug) returns something JSON cannot encode
    side.options = lambda args: {"bad": _Opaque()}  # type: ignore[method-assign]
    sent: list[dict[str, Any]] = []
    # When it is asked for, the reply is an error the Comm can carry, not an exception
    reply = side.respond({"id": "o", "op": "options", "args": {}}, sent.append)
    assert sent == [reply] and reply["ok"] is False
    json.dumps(reply)
    stage_works(side)


# --- over a real kernel ---


@pytest.fixture
def kernel_sidebar(tmp_path: Path) -> Iterator[Any]:
    from jupyter_client.manager import start_new_kernel

    from ..test_kernel_comm import Sidebar

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        yield Sidebar(manager, client)
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)


def _send(sidebar: Any, data: Any) -> dict[str, Any]:
    msg = sidebar.client.session.msg("comm_msg", {"comm_id": sidebar.comm_id, "data": data})
    sidebar.client.shell_channel.send(msg)
    return sidebar.reply()[1]


@pytest.mark.slow
def test_a_real_kernel_survives_junk_and_cleans_up_on_close_and_shutdown(
    kernel_sidebar: Any, tmp_path: Path
) -> None:
    from ..test_kernel_comm import SETUP

    staging = tmp_path / "staging"
    kernel_sidebar.execute(SETUP)
    assert kernel_sidebar.open(staging)["event"] == "ready"
    # When junk, an oversized request and out-of-order requests arrive over the Comm
    junk = [
        [1, 2],
        "stage",
        {"op": "nope"},
        {"id": "r", "op": "stage", "args": "mlp"},
        {"id": "r", "op": "models", "args": {"pad": "x" * (jk.MAX_MESSAGE_BYTES + 1)}},
        {"id": "r", "op": "write", "args": {"id": "0" * 32, "folder": "out"}},
        {"id": "r", "op": "discard", "args": {"id": "0" * 32}},
    ]
    for data in junk:
        reply = _send(kernel_sidebar, data)
        # Then each gets an error reply
        assert reply["ok"] is False and reply["error"]["message"], (data, reply)
    # And the kernel side still stages
    staged = _send(kernel_sidebar, {"id": "s", "op": "stage", "args": STAGE_MLP})
    assert staged["ok"] is True, staged
    first = staging / staged["result"]["id"]
    assert first.is_dir()
    # When the sidebar closes its Comm (it follows another notebook), that export is removed
    close = kernel_sidebar.client.session.msg(
        "comm_close", {"comm_id": kernel_sidebar.comm_id, "data": {}}
    )
    kernel_sidebar.client.shell_channel.send(close)
    kernel_sidebar.execute("pass")  # the shell handles messages in order
    assert not first.exists()
    # When a new Comm stages again and the kernel shuts down cleanly, that export is removed too
    kernel_sidebar.comm_id = uuid.uuid4().hex
    assert kernel_sidebar.open(staging)["event"] == "ready"
    staged = _send(kernel_sidebar, {"id": "s2", "op": "stage", "args": STAGE_MLP})
    second = staging / staged["result"]["id"]
    assert second.is_dir()
    kernel_sidebar.manager.shutdown_kernel(now=False)
    assert not second.exists()
    assert list(staging.iterdir()) == []


# --- every field of every operation has one JSON type; flags are JSON booleans ---

NOT_BOOLEANS = ["false", "true", "False", "", "0", 0, 1, 1.0, None, [], [False], {}, {"v": False}]


def _write(side: jk.ModelSaveKernel, **args: Any) -> dict[str, Any]:
    return ask(side, {"id": "w", "op": "write", "args": {"folder": "out", **args}})


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder``: (inode, mtime_ns), to see any write or replacement."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_overwrite_that_is_not_a_json_boolean_is_refused_and_replaces_nothing(
    side: jk.ModelSaveKernel,
) -> None:
    # Given a staged export written once as version 1.0.0
    sid = ask(side, {"id": "s", "op": "stage", "args": {"model": "mlp", "format": "safetensors"}})
    sid = sid["result"]["id"]
    assert _write(side, id=sid, version="1.0.0")["ok"]
    before = _tree(side.root_dir)
    for value in NOT_BOOLEANS:
        # When it is written again at that version with an overwrite flag that is not a boolean
        reply = _write(side, id=sid, version="1.0.0", overwrite=value)
        # Then it is refused with the reason, and the written files are untouched
        assert reply["ok"] is False, value
        assert reply["error"]["type"] == "InvalidOptionError", (value, reply)
        assert "'overwrite' must be true or false" in reply["error"]["message"], reply
        assert _tree(side.root_dir) == before, value
    # And a real `true` does replace it (so the refusals above were about the flag)
    assert _write(side, id=sid, version="1.0.0", overwrite=True)["ok"]
    assert _tree(side.root_dir) != before


def test_allow_mismatch_that_is_not_a_json_boolean_writes_no_failed_export(
    side: jk.ModelSaveKernel,
) -> None:
    # Given an export whose parity failed (a data-dependent branch)
    side.namespace["branchy"] = models.DataDependentBranch()
    args = {"model": "branchy", "example": "torch.randn(2, 4) + 5"}
    staged = ask(side, {"id": "s", "op": "stage", "args": args})["result"]
    assert staged["report"]["passed"] is False
    for value in NOT_BOOLEANS:
        # When it is written with allow_mismatch that is not a boolean
        reply = _write(side, id=staged["id"], allow_mismatch=value)
        # Then it is refused, and nothing is written
        assert reply["ok"] is False and reply["error"]["type"] == "InvalidOptionError", value
        assert "'allow_mismatch' must be true or false" in reply["error"]["message"]
        assert _tree(side.root_dir) == {}, value
    # And `false` refuses it for its parity, `true` writes it
    assert _write(side, id=staged["id"], allow_mismatch=False)["error"]["type"] == "ParityError"
    assert _write(side, id=staged["id"], allow_mismatch=True)["ok"]


# a wrong value of each JSON type, to put in any field
WRONG = {
    "string": "x",
    "integer": 17,
    "big integer": HUGE,
    "fraction": 1.5,
    "boolean": True,
    "list": [1],
    "object": {"a": 1},
}
# per operation: a valid request, and each field's JSON type(s) ("null": may be null)
VALID_FIELDS = {
    "stage": ({"model": "mlp", "format": "safetensors"}, {
        "model": {"string"}, "format": {"string", "null"}, "exporter": {"string", "null"},
        "opset": {"integer", "null"}, "atol": {"integer", "fraction", "null"},
        "rtol": {"integer", "fraction", "null"}, "name": {"string", "null"},
        "example": {"string", "null"}, "dynamic_axes": {"object", "null"},
        "generation": {"boolean"},
        "precision": {"string", "null"}, "latency": {"boolean"},
    }),
    "diff": ({"id": "SID", "folder": "out"}, {"id": {"string"}, "folder": {"string", "null"}}),
    "write": ({"id": "SID", "folder": "out"}, {
        "id": {"string"}, "folder": {"string", "null"}, "name": {"string", "null"},
        "version": {"string", "null"}, "overwrite": {"boolean"},
        "allow_mismatch": {"boolean"},
    }),
    "discard": ({"id": "SID"}, {"id": {"string"}}),
    "models": ({}, {}),
    "options": ({}, {}),
}  # fmt: skip


def test_the_field_table_is_the_kernel_sides() -> None:
    assert set(VALID_FIELDS) == set(jk.ModelSaveKernel.OPERATIONS)
    assert {op: set(fields) for op, (_, fields) in VALID_FIELDS.items()} == {
        op: set(fields) for op, fields in jk.FIELDS.items()
    }


def test_every_field_of_every_operation_refuses_a_value_of_another_json_type(
    side: jk.ModelSaveKernel,
) -> None:
    sid = ask(side, {"id": "s", "op": "stage", "args": {"model": "mlp", "format": "safetensors"}})
    sid = sid["result"]["id"]
    staged_before = set(side.staged)
    checked = 0
    for op, (valid, fields) in VALID_FIELDS.items():
        valid = {k: sid if v == "SID" else v for k, v in valid.items()}
        wrong = {**{f: WRONG for f in fields}, "colour": {"string": "red"}}  # an unknown field
        for field, values in wrong.items():
            for kind, value in values.items():
                if kind in fields.get(field, ()):
                    continue
                # When a field holds a value of a type it does not take
                reply = ask(side, {"id": "t", "op": op, "args": {**valid, field: value}})
                # Then the request is refused, naming the field
                assert reply["ok"] is False, (op, field, kind)
                assert reply["error"]["type"] == "InvalidOptionError", (op, field, kind, reply)
                assert repr(field) in reply["error"]["message"], (op, field, reply)
                assert len(reply["error"]["message"]) < 500, (op, field)
                checked += 1
    # And nothing was staged, written or discarded on the way
    assert set(side.staged) == staged_before
    assert _tree(side.root_dir) == {}
    assert checked > 60


@pytest.mark.parametrize(
    "axes",
    [
        {"input": [{}]},
        {"input": [[0]]},
        {"input": [1.5]},
        {"input": [True]},
        {"input": [HUGE]},
        {"input": "batch"},
        {"input": 0},
        {"input": {"zero": "batch"}},
        {"input": {"0": 5}},
        {"input": {"0": ["batch"]}},
        {"input": {"1_0": "batch"}},  # int() would read 10
        {"input": {"\u0661": "batch"}},  # int() would read this Arabic-Indic digit as 1
        {"input": {" 0": "batch"}},
        {"input": {"9" * 5000: "batch"}},
        {"input": {"0": "\ud800"}},
    ],
)
def test_bad_dynamic_axes_are_refused_with_the_reason(side: jk.ModelSaveKernel, axes) -> None:
    reply = ask(side, {"id": "a", "op": "stage", "args": {"model": "mlp", "dynamic_axes": axes}})
    assert reply["ok"] is False
    assert reply["error"]["type"] == "InvalidOptionError", reply
    assert "dynamic_axes" in reply["error"]["message"]
    assert side.staged == {}


def test_dynamic_axes_from_json_reach_the_exporter(side: jk.ModelSaveKernel) -> None:
    args = {"model": "mlp", "example": "torch.randn(2, 8)", "dynamic_axes": {"input": {"0": "b"}}}
    reply = ask(side, {"id": "a", "op": "stage", "args": {**args, "format": "onnx",
                                                          "exporter": "torchscript"}})  # fmt: skip
    assert reply["ok"], reply
    assert side.staged[reply["result"]["id"]].dynamic_axes == {"input": {0: "b"}}


# --- hostile requests: exactly one reply each, whatever the evaluation raises ---


BOOM = "type('Boom', (BaseException,), {})"  # a BaseException that is no interrupt


def _throw(kind: str) -> str:
    """A Python expression that raises ``kind`` when evaluated."""
    return f"(_ for _ in ()).throw({kind})"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"op": "write", "args": {"id": "SID", "folder": "a\x00b"}}, "NUL"),
        ({"op": "write", "args": {"id": "SID", "folder": "a\ud800b"}}, "folder"),
        ({"op": "write", "args": {"id": "SID", "folder": "x" * 5000}}, "too long"),
        ({"op": "write", "args": {"id": "SID", "folder": "a\\..\\..\\b"}}, "folder"),
        ({"op": "stage", "args": {"model": "mlp", "dynamic_axes": _nested(5000)}}, "nested"),
        ({"op": "stage", "args": {"model": _nested(100)}}, "nested"),
        ({"op": "models", "args": {"x": _nested(100_000)}}, "nested"),
        ({"op": "stage", "args": {"model": "mlp", "example": _throw("SystemExit")}}, "SystemExit"),
        ({"op": "stage", "args": {"model": "mlp", "example": _throw("GeneratorExit")}}, "GeneratorExit"),
        ({"op": "stage", "args": {"model": "mlp", "example": _throw(BOOM)}}, "Boom"),
        ({"op": "stage", "args": {"model": "mlp", "example": "exit()"}}, "SystemExit"),
        ({"op": "stage", "args": {"model": "mlp", "example": "\ud800"}}, "example"),
        ({"op": "stage", "args": {"model": "\ud800"}}, "'model' is not valid text"),
        ({"op": "stage", "args": {"model": "mlp", "opset": HUGE}}, "opset"),
        ({"op": "stage", "args": {"model": "mlp", "atol": -HUGE}}, "atol"),
        ({"op": "stage", "args": {"model": "mlp", "name": "n" * 500_000}}, "name"),
    ],
)  # fmt: skip
def test_a_hostile_request_gets_exactly_one_error_reply(
    side: jk.ModelSaveKernel, args: dict[str, Any], says: str
) -> None:
    sid = ask(side, {"id": "s", "op": "stage", "args": {"model": "mlp", "format": "safetensors"}})
    sid = sid["result"]["id"]
    message = {"id": "h", **args}
    if message["args"].get("id") == "SID":
        message["args"]["id"] = sid
    # When the request is answered (ask checks: progress events, then one reply the wire takes)
    reply = ask(side, message)
    # Then it is one clear refusal, and nothing was written
    assert reply["ok"] is False
    expected = "WriteError" if says == "too long" else "InvalidOptionError"  # the OS refuses it
    assert reply["error"]["type"] == expected, reply
    assert says in reply["error"]["message"]
    assert len(reply["error"]["message"]) <= jk.MAX_ERROR_CHARS
    assert _tree(side.root_dir) == {}
    # And the kernel side goes on
    stage_works(side)


@pytest.mark.parametrize(
    ("rid", "echoed"),
    [
        ("r1", "r1"),
        (7, 7),
        (2**53 - 1, 2**53 - 1),
        (2**53, None),
        (-(2**60), None),
        ("10**5000", None),  # over Python's int-to-str limit: it cannot be written back as JSON
        (1.5, None),
        (True, None),
        ("r" * 201, None),
        ("\ud800", None),
        ([1], None),
        ({"a": 1}, None),
    ],
)
def test_the_request_id_is_echoed_only_when_the_sidebar_could_have_sent_it(
    side: jk.ModelSaveKernel, rid: Any, echoed: Any
) -> None:
    rid = 10**5000 if rid == "10**5000" else rid  # (not in the parameters: pytest reprs them)
    sent: list[dict[str, Any]] = []
    reply = side.respond({"id": rid, "op": "models", "args": {}}, sent.append)
    assert sent == [reply] and _on_the_wire(reply)
    assert reply["id"] == echoed


def _send_raw(sidebar: Any, content: bytes) -> None:
    """A comm_msg whose content is sent as these exact JSON bytes (what a crafted websocket frame
    could carry; jupyter_client would refuse to encode some of them)."""
    msg = sidebar.client.session.msg("comm_msg", {})
    msg["content"] = content
    sidebar.client.shell_channel.send(msg)


@pytest.mark.slow
def test_a_real_kernel_answers_each_hostile_message_once(
    kernel_sidebar: Any, tmp_path: Path
) -> None:
    from ..test_kernel_comm import SETUP

    kernel_sidebar.execute(SETUP)
    assert kernel_sidebar.open(tmp_path / "staging")["event"] == "ready"
    staged = _send(kernel_sidebar, {"id": "s", "op": "stage", "args": STAGE_MLP})
    sid = staged["result"]["id"]
    assert _send(
        kernel_sidebar, {"id": "w", "op": "write", "args": {"id": sid, "version": "1.0.0"}}
    )["ok"]
    written = sorted(p.name for p in tmp_path.rglob("*.onnx*"))
    hostile = {
        "overwrite as a string": {"op": "write", "args": {"id": sid, "version": "1.0.0", "overwrite": "false"}},
        "NUL in the folder": {"op": "write", "args": {"id": sid, "folder": "a\x00b"}},
        "nested 200 deep": {"op": "stage", "args": {"model": "mlp", "example": _nested(200)}},
        "SystemExit": {"op": "stage", "args": {"model": "mlp", "example": "__import__('sys').exit(3)"}},
        "GeneratorExit": {"op": "stage", "args": {"model": "mlp", "example": _throw("GeneratorExit")}},
        "a BaseException": {"op": "stage", "args": {"model": "mlp", "example": _throw(BOOM)}},
        "a lone surrogate": {"op": "stage", "args": {"model": "\ud800"}},
    }  # fmt: skip
    for label, data in hostile.items():
        # When each hostile request arrives over the Comm (as a browser's JSON.stringify writes
        # it: ASCII, a lone surrogate escaped)
        content = {"comm_id": kernel_sidebar.comm_id, "data": {"id": label, **data}}
        _send_raw(kernel_sidebar, json.dumps(content).encode())
        reply = kernel_sidebar.reply()[1]
        # Then it gets one error reply
        assert reply["id"] == label and reply["ok"] is False, reply
        assert reply["error"]["type"] == "InvalidOptionError", reply
    # A 4000-digit id (JSON allows it, JavaScript cannot send it) is answered without an id
    reply = _send(kernel_sidebar, {"id": HUGE, "op": "models", "args": {}})
    assert reply["id"] is None and reply["ok"] is True
    # And nothing was overwritten or written
    assert sorted(p.name for p in tmp_path.rglob("*.onnx*")) == written
    # When messages arrive that the kernel's own JSON parser refuses (an integer over Python's
    # 4300-digit limit, nesting past its recursion limit), ipykernel drops them before any Comm
    # code runs: no reply is possible. The kernel stays up and answers the next request.
    comm = f'{{"comm_id": "{kernel_sidebar.comm_id}", "data": '
    _send_raw(kernel_sidebar, f'{comm}{{"id": 1{"0" * 5000}, "op": "models"}}}}'.encode())
    _send_raw(
        kernel_sidebar,
        (comm + '{"id": "d", "args": ' + "[" * 100_000 + "]" * 100_000 + "}}").encode(),
    )
    after = _send(kernel_sidebar, {"id": "after", "op": "models", "args": {}})
    assert after["id"] == "after" and after["ok"] is True
