"""ONNX Runtime sessions on the best execution provider installed (CUDA when onnxruntime-gpu is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def providers(prefer_cuda: bool = True) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if prefer_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: Path | str, prefer_cuda: bool = True) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: keep ORT's warnings out of notebooks
    return ort.InferenceSession(str(path), options, providers=providers(prefer_cuda))
