"""The kernel side over a real ipykernel: installed by a silent execute, spoken to over a Comm."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow

SETUP = """
import torch
from torch import nn
mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
"""


class Sidebar:
    """What the TypeScript sidebar does, with jupyter_client."""

    def __init__(self, manager: Any, client: Any) -> None:
        self.manager = manager
        self.client = client
        self.comm_id = uuid.uuid4().hex

    def execute(self, code: str, silent: bool = False) -> None:
        reply = self.client.execute_interactive(
            code, silent=silent, store_history=False, timeout=60, output_hook=lambda m: None
        )
        assert reply["content"]["status"] == "ok", reply["content"]

    def open(self, staging_dir: Path) -> dict:
        self.execute(
            "import jupyter_modelsave.kernel as _jms_kernel; "
            f"_jms_kernel.install(staging_dir={str(staging_dir)!r})",
            silent=True,
        )
        msg = self.client.session.msg(
            "comm_open", {"comm_id": self.comm_id, "target_name": "jupyter_modelsave", "data": {}}
        )
        self.client.shell_channel.send(msg)
        return self.next_comm_message()

    def request(self, op: str, args: dict, rid: str = "r1") -> Any:
        msg = self.client.session.msg(
            "comm_msg", {"comm_id": self.comm_id, "data": {"id": rid, "op": op, "args": args}}
        )
        self.client.shell_channel.send(msg)

    def next_comm_message(self) -> dict:
        while True:
            msg = self.client.get_iopub_msg(timeout=120)
            if msg["msg_type"] in ("comm_msg", "comm_open") and (
                msg["content"].get("comm_id") == self.comm_id
            ):
                return msg["content"]["data"]

    def reply(self) -> tuple[list[dict], dict]:
        events = []
        while True:
            data = self.next_comm_message()
            if data.get("event") == "reply":
                return events, data
            events.append(data)


@pytest.fixture
def sidebar(tmp_path: Path) -> Iterator[Sidebar]:
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        yield Sidebar(manager, client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_models_and_stage_over_a_comm(sidebar: Sidebar, tmp_path: Path) -> None:
    # Given a kernel with a model, and the kernel side installed silently
    sidebar.execute(SETUP)
    assert sidebar.open(tmp_path / "staging")["event"] == "ready"
    # When the sidebar asks for the models
    sidebar.request("models", {})
    _, reply = sidebar.reply()
    # Then it gets them
    assert reply["ok"] is True
    assert [m["name"] for m in reply["result"]["models"]] == ["mlp"]
    sidebar.execute("mlp(torch.randn(2, 8))")
    # When it stages the model, progress arrives before the reply
    sidebar.request("stage", {"model": "mlp"}, rid="r2")
    events, reply = sidebar.reply()
    assert reply["id"] == "r2" and reply["ok"] is True, reply
    assert [e["step"] for e in events][:2] == ["prepare", "export"]
    assert reply["result"]["report"]["passed"] is True
    assert (tmp_path / "staging" / reply["result"]["id"] / "mlp.onnx").is_file()


def test_interrupting_the_kernel_cancels_a_stage(sidebar: Sidebar, tmp_path: Path) -> None:
    # Given a model whose forward call is slow, so the staging is still running when interrupted
    sidebar.execute(
        SETUP + "import time\n"
        "class Slow(nn.Module):\n"
        "    def forward(self, x):\n"
        "        time.sleep(30)\n"
        "        return x * 2\n"
        "slow = Slow()\n"
    )
    sidebar.open(tmp_path / "staging")
    # When the stage request is interrupted (the sidebar's Cancel button)
    sidebar.request("stage", {"model": "slow", "example": "torch.randn(2)"})
    assert sidebar.next_comm_message()["step"] == "prepare"
    sidebar.manager.interrupt_kernel()
    _, reply = sidebar.reply()
    # Then the reply says Cancelled, nothing stays staged, and the kernel answers the next request
    assert reply["ok"] is False
    assert reply["error"]["type"] == "Cancelled"
    assert not any((tmp_path / "staging").glob("*"))
    sidebar.request("models", {}, rid="r4")
    _, reply = sidebar.reply()
    assert reply["ok"] is True


def test_once_connected_a_model_run_before_any_listing_is_known(
    sidebar: Sidebar, tmp_path: Path
) -> None:
    # Given the sidebar connected to a kernel that has not even imported torch yet
    assert sidebar.open(tmp_path / "staging")["event"] == "ready"
    # When a cell defines a model and runs it, before the sidebar lists anything
    sidebar.execute(SETUP + "mlp(torch.randn(3, 8))")
    sidebar.request("models", {})
    _, reply = sidebar.reply()
    # Then that call is its last input, and staging it needs nothing typed
    (info,) = reply["result"]["models"]
    assert info["last_input"][0]["shape"] == [3, 8] and info["guessed_expression"] is None
    sidebar.request("stage", {"model": "mlp"}, rid="r2")
    events, reply = sidebar.reply()
    assert reply["ok"] is True, reply
    # and the progress names the exporter's own steps, in order
    steps = [e["step"] for e in events]
    exporter = [s for s in steps if s.startswith("export: ")]
    assert exporter[:2] == ["export: tracing (torch.export)", "export: decompositions"], steps
