"""What a user reads while and after staging: the exporter's own steps, whole error lines."""

from __future__ import annotations

import threading

import torch

import jupyter_modelsave as jms
from jupyter_modelsave.core._capture import MAX_LINE, first_line
from jupyter_modelsave.core._exporter_steps import exporter_steps

from . import models


def test_the_dynamo_exporter_reports_its_own_steps():
    # Given a stage with a progress callback
    steps: list[tuple[str, float]] = []
    staged = jms.stage(models.SmallCNN().eval(), torch.randn(2, 3, 8, 8), exporter="dynamo",
                       progress=lambda step, fraction: steps.append((step, fraction)))  # fmt: skip
    staged.discard()
    # Then between "export" and "parity" it hears torch.onnx's steps, in order, moving forward
    names = [s for s, _ in steps]
    inner = names[names.index("export") + 1 : names.index("parity")]
    assert inner[:3] == [
        "export: tracing (torch.export)",
        "export: decompositions",
        "export: translating to ONNX",
    ], names
    fractions = [f for _, f in steps]
    assert fractions == sorted(fractions) and 0.1 < fractions[names.index(inner[0])] < 0.6


def test_another_threads_export_is_not_reported_to_this_listener():
    heard: list[str] = []
    done = threading.Event()

    def other_thread() -> None:
        jms.stage(models.mlp(), torch.randn(2, 8), exporter="dynamo").discard()
        done.set()

    with exporter_steps(lambda step, fraction: heard.append(step), 0.1, 0.6):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(120)
    assert done.is_set() and heard == []


def test_a_wrapped_torch_onnx_error_reads_as_its_summary_not_next_steps():
    message = (
        "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting "
        "the model to ONNX. Next steps:\n- Modify the model code ...\n\n## Exception summary\n\n"
        "<class 'torch.fx.experimental.symbolic_shapes.GuardOnDataDependentSymNode'>: Could not "
        "guard on data-dependent expression Eq(u0, 1)\n\nmore text"
    )
    line = first_line(RuntimeError(message))
    assert line == (
        "GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u0, 1)"
    )


def test_a_long_line_is_cut_visibly():
    line = first_line(ValueError("x" * 1000 + "\nsecond"))
    assert len(line) == MAX_LINE and line.endswith("…")
    assert first_line(ValueError("short\nsecond")) == "short"
