"""Which architectures export to which formats at which opsets: the README's table, measured.

Stages every architecture of ``tests/architectures.py`` (transformers models from small configs,
recurrent taggers, ResNet-18/MobileNetV3-like CNNs, Keras models) in every format, and ONNX at a
few opsets, each with its dynamic axes (batch, and sequence where there is one) and the parity
check on, then prints Markdown tables. A cell is ``✓`` with the exporter that ran (and the opset
the file has, when it is not the one asked for), ``✗ parity`` when the artifact was written
but parity failed, or ``✗`` with the error type.

    .venv/bin/python scripts/architecture_table.py            # print the tables
    .venv/bin/python scripts/architecture_table.py --readme   # also replace them in README.md

``tests/test_architecture_table.py`` checks that README.md holds what this script produces
(for the cheap rows).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests import architectures  # noqa: E402

START, END = "<!-- architecture-table:start -->", "<!-- architecture-table:end -->"
OPSETS = (11, 14, 18, None)  # None: the exporter's default
TORCH_FORMATS = ("torchscript", "torch_export", "safetensors")
KERAS_FORMATS = ("savedmodel", "keras", "weights")


def columns(framework: str) -> list[tuple[str, dict]]:
    """(header, stage options) of each column for a framework's table."""
    onnx = [
        (f"ONNX opset {opset}" if opset else "ONNX default", {"format": "onnx", "opset": opset})
        for opset in OPSETS
    ]
    formats = TORCH_FORMATS if framework == "torch" else KERAS_FORMATS
    return onnx + [(fmt, {"format": fmt}) for fmt in formats]


def cell(model, example, axes: dict, options: dict) -> str:
    """Stage one (architecture, format, opset) and describe the outcome in a few words."""
    import jupyter_modelsave as jms

    weights_only = options["format"] in ("safetensors", "weights")
    try:
        quiet = io.StringIO()  # what exporters print past jms' own capture
        with (
            contextlib.redirect_stdout(quiet),
            contextlib.redirect_stderr(quiet),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            staged = jms.stage(model, example, dynamic_axes=None if weights_only else axes or None,
                               **{k: v for k, v in options.items() if v is not None})  # fmt: skip
    except jms.ModelSaveError as err:
        return f"✗ {type(err).__name__}"
    except Exception as err:  # a raw exception out of stage is a bug worth showing
        return f"✗ raw {type(err).__name__}"
    try:
        if not staged.report.passed:
            return "✗ parity"
        text = "✓" if weights_only else f"✓ {staged.exporter}"
        if options.get("opset") and staged.opset != options["opset"]:
            text += f" (file: opset {staged.opset})"
        return text
    finally:
        staged.discard()


def row(arch: architectures.Architecture) -> str:
    """One Markdown table row for an architecture."""
    model, example = arch.build()
    cells = [
        cell(model, example, arch.dynamic_axes, options) for _, options in columns(arch.framework)
    ]
    return f"| {arch.name} | {' | '.join(cells)} |"


def table(framework: str, names: list[str] | None = None) -> str:
    heads = [h for h, _ in columns(framework)]
    lines = [f"| architecture | {' | '.join(heads)} |", "|---" * (len(heads) + 1) + "|"]
    for arch in architectures.ARCHITECTURES:
        if arch.framework == framework and (names is None or arch.name in names):
            lines.append(row(arch))
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def versions() -> str:
    import onnx
    import onnxruntime
    import torch

    found = [f"torch {torch.__version__}", f"onnx {onnx.__version__}",
             f"onnxruntime {onnxruntime.__version__}"]  # fmt: skip
    for name in ("transformers", "tensorflow", "tf2onnx"):
        try:
            module = __import__(name)
            found.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return ", ".join(found)


def markdown() -> str:
    return (
        f"PyTorch:\n\n{table('torch')}\n\nKeras (TensorFlow backend):\n\n{table('keras')}\n\n"
        f"Measured with {versions()}."
    )


def replace_in_readme(text: str, readme: Path = ROOT / "README.md") -> None:
    content = readme.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(content):
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    readme.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", content))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="replace the table in README.md")
    args = parser.parse_args()
    text = markdown()
    print(text)
    if args.readme:
        replace_in_readme(text)


if __name__ == "__main__":
    main()
