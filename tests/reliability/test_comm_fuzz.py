"""The sidebar's Comm protocol: whatever arrives, one clear error reply, and the kernel side goes on.

Fuzzed with hypothesis at ``ModelSaveKernel.respond`` (derandomized, like tests/test_properties.py),
then over a real ipykernel: junk, an oversized request and out-of-order requests, a stage that still
works after them, and staged exports removed when the Comm closes and when the kernel shuts down.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    "id", "folder", "version", "overwrite", "allow_mismatch",
]  # fmt: skip


class _Opaque:
    """A value no JSON encoder knows."""


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["mlp", "nope", "../x", "/abs", "a\x00b", "", "onnx", "torch.randn(2, 8)"]),
)
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
messages = st.one_of(
    any_value,  # not an object at all
    st.fixed_dictionaries({}, optional={"id": any_value, "op": any_value, "args": any_value}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": known_ops, "args": any_value}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": known_ops, "args": json_args}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": st.just("stage"), "args": stage_args}),
    st.fixed_dictionaries({"id": st.text(max_size=8), "op": st.just("stage"), "args": quick_stage}),
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
        json.dumps(m)  # everything sent must cross the Comm
    rid = message.get("id") if isinstance(message, dict) else None
    if isinstance(rid, str) and len(rid) <= 200:
        assert reply["id"] == rid
    if not reply["ok"]:
        error = reply["error"]
        assert error["type"] in ERROR_TYPES, error
        assert isinstance(error["message"], str) and len(error["message"]) > 10, error
    return reply


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
    seen = {"ok": 0, "error": 0}

    @SETTINGS
    @given(message=messages)
    def fuzz(message: Any) -> None:
        reply = ask(side, message)
        seen["ok" if reply["ok"] else "error"] += 1
        # published folders are exactly the live staged exports (none half-made, none orphaned)
        assert published(side) == set(side.staged)

    try:
        fuzz()
        assert seen["error"] > 50 and seen["ok"] > 5  # both paths were reached
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
        ({"id": "r", "op": "stage", "args": {"model": {"x": 1}}}, "No variable"),
        ({"id": "r", "op": "stage", "args": {"model": "mlp", "opset": "abc"}}, "opset"),
        ({"id": "r", "op": "stage", "args": {"model": "mlp", "example": 5}}, "expression"),
        ({"id": "r", "op": "write", "args": {"id": 5}}, "stage it again"),
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
    over = ask(side, {"id": "big", "op": "models", "args": {"pad": pad}})
    under = ask(side, {"id": "ok", "op": "models", "args": {"pad": pad[:-100]}})
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
