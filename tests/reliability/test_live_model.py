"""The live model: whatever fails inside ``jms.stage``, the user's model is left exactly as it was.

Every step ``stage`` goes through (input normalisation, option checks, the reference forward, the
staging folder, the format's exporter, the artifact runner, the parity probes and comparison,
hashing, the progress callback) is made to raise each kind of failure in turn: a bad-input error,
an exporter crash, a CUDA out-of-memory error and a KeyboardInterrupt. After each one the model
has the same device, dtypes, training flags (per submodule), bitwise parameter and buffer values,
gradients, ``requires_grad`` flags and hooks; no work folder is left behind; and the next normal
stage of the same model succeeds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import jupyter_modelsave as jms
from jupyter_modelsave.core import _ort, discovery, hashing, staging, verify
from jupyter_modelsave.core.errors import InvalidOptionError
from jupyter_modelsave.core.formats import onnx as onnx_format
from jupyter_modelsave.core.formats import safetensors_format
from jupyter_modelsave.core.formats.onnx import OnnxFormat
from jupyter_modelsave.core.formats.safetensors_format import SafetensorsFormat
from jupyter_modelsave.core.formats.torch_export import TorchExportFormat
from jupyter_modelsave.core.formats.torchscript import TorchScriptFormat
from jupyter_modelsave.core.frameworks import torch as torch_adapter
from jupyter_modelsave.core.frameworks.torch import TorchAdapter
from jupyter_modelsave.core.model_state import _HOOK_ATTRS


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _user_model() -> nn.Module:
    """A model as a user has it mid-training: mixed training flags, a frozen parameter,
    gradients, batch-norm statistics that a training-mode forward would move, and hooks of
    every kind (the jms.watch recorder among them)."""
    torch.manual_seed(0)
    model = Net().train()
    model(torch.randn(4, 6)).sum().backward()
    model.body[1].eval()  # a frozen batch norm inside a training model
    model.head.bias.requires_grad_(False)
    model.body.register_forward_hook(lambda module, args, out: None)
    model.head.register_forward_pre_hook(lambda module, args: None)
    model.body[0].register_full_backward_hook(lambda module, grad_in, grad_out: None)
    jms.watch(model)
    return model


MODEL = _user_model()  # one model for all cases: its exports are cached as a user's would be
X = torch.randn(4, 6)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.uint8).clone()


def _module_state(name: str, m: nn.Module) -> tuple:
    hooks = {a: list(getattr(m, a).items()) for a in _HOOK_ATTRS if hasattr(m, a)}
    return name, type(m), m.training, sorted(vars(m)), hooks


def _tensor_state(name: str, t: torch.Tensor) -> tuple:
    grad = getattr(t, "grad", None)
    return (name, id(t), t.device, t.dtype, t.requires_grad, _bits(t),
            None if grad is None else _bits(grad))  # fmt: skip


def _global_state() -> tuple:
    module = nn.modules.module
    return (torch.is_grad_enabled(), torch.get_default_dtype(),
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            len(module._global_forward_hooks), len(module._global_forward_pre_hooks),
            len(module._global_backward_hooks), getattr(discovery._PAUSED, "depth", 0))  # fmt: skip


def _snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything about ``model`` (and torch's global modes) that stage must not change."""
    return {
        "modules": [_module_state(n, m) for n, m in model.named_modules()],
        "params": [_tensor_state(n, p) for n, p in model.named_parameters()],
        "buffers": [_tensor_state(n, b) for n, b in model.named_buffers()],
        "global": _global_state(),
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["global"] == before["global"]
    assert after["modules"] == before["modules"]
    for got, want in zip(after["params"] + after["buffers"], before["params"] + before["buffers"]):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert torch.equal(g, w) if isinstance(w, torch.Tensor) else g == w, got[0]


# ------------------------------------------------------------------------- what gets injected


def _failures(step: str) -> dict[str, BaseException]:
    return {
        "bad input": InvalidOptionError(f"injected bad input at {step}"),
        "exporter crash": RuntimeError(f"injected crash at {step}"),
        "cuda oom": torch.cuda.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 20.00 GiB (injected at {step})"
        ),
        "keyboard interrupt": KeyboardInterrupt(),
    }


KINDS = list(_failures(""))
BEFORE_EXPORT = {"input normalisation", "format lookup", "format options", "dynamic axes check",
                 "placement", "reference forward", "output flattening", "staging folder"}  # fmt: skip
GRAPH = ("onnx", "torchscript", "torch_export")
FORMAT_CLASS = {"onnx": OnnxFormat, "safetensors": SafetensorsFormat,
                "torchscript": TorchScriptFormat, "torch_export": TorchExportFormat}  # fmt: skip


def _targets(fmt: str) -> dict[str, tuple[Any, str]]:
    """step name -> (object, attribute) that stage calls during that step, for format ``fmt``."""
    cls = FORMAT_CLASS[fmt]
    steps: dict[str, tuple[Any, str]] = {
        "input normalisation": (torch_adapter, "normalize_inputs"),
        "format lookup": (staging, "get_format"),
        "format options": (cls, "check_options"),
        "dynamic axes check": (staging, "check_dynamic_axes"),
        "placement": (TorchAdapter, "placed"),
        "reference forward": (TorchAdapter, "call"),
        "output flattening": (TorchAdapter, "flatten"),
        "staging folder": (tempfile, "mkdtemp"),
        "format export": (cls, "export"),
        "format verify": (cls, "verify"),
        # the sha256 step; file_hashes is skipped by formats that hash while writing
        "hashing": (hashing, "combined_sha256"),
    }
    if fmt in GRAPH:
        steps |= {
            "runner creation": (cls, "runner"),
            "parity probes": (verify, "make_probes"),
            "parity forward": (verify, "live_outputs"),
            "parity comparison": (verify, "compare_output"),
        }
    steps |= {
        "onnx": {
            "torch.onnx exporters": (onnx_format, "_export_with_fallback"),
            "onnx checker": (onnx_format, "_finish"),
            "ORT session": (_ort, "session"),
        },
        "safetensors": {
            "tensor preparation": (safetensors_format, "saveable_tensors"),
            "sharding": (safetensors_format, "split_shards"),
            "round-trip reload": (cls, "load"),
            "weights comparison": (verify, "weights_parity"),
        },
        "torchscript": {
            "torch.jit.trace": (torch.jit, "trace"),
            "torch.jit.save": (torch.jit, "save"),
        },
        "torch_export": {
            "torch.export.export": (torch.export, "export"),
            "torch.export.save": (torch.export, "save"),
            "torch.export.load": (torch.export, "load"),
        },
    }[fmt]
    return steps


CASES = [
    pytest.param(fmt, step, kind, id=f"{fmt}-{step}-{kind}".replace(" ", "_"))
    for fmt in FORMAT_CLASS
    for step in [*_targets(fmt), "progress callback"]
    for kind in KINDS
]


class _Injector:
    """Replaces one callable so that its first call (matching ``when``) raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.fired = False

    def wrap(self, original: Callable, when: Callable[..., bool] = lambda *a, **k: True) -> Any:
        def injected(*args: Any, **kwargs: Any) -> Any:
            if not self.fired and when(*args, **kwargs):
                self.fired = True
                raise self.error
            return original(*args, **kwargs)

        return injected

    def progress(self, step: str, fraction: float) -> None:
        if not self.fired and step != "prepare":  # fail at the first step after the checks
            self.fired = True
            raise self.error


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's folder for this test only, so leftovers of other processes do not count."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _raised_the_injected(err: BaseException, injected: BaseException) -> bool:
    """The injected error itself, or a ModelSaveError caused by / naming it."""
    if err is injected:
        return True
    if not isinstance(err, jms.ModelSaveError) or isinstance(injected, KeyboardInterrupt):
        return False
    cause = err.__cause__
    while cause is not None and cause is not injected:
        cause = cause.__cause__
    return cause is injected or str(injected) in str(err)


@pytest.mark.parametrize(("fmt", "step", "kind"), CASES)
def test_a_failure_at_any_step_leaves_the_model_and_the_process_as_they_were(
    fmt, step, kind, private_tmp, monkeypatch
):
    # Given a user's model mid-training, and one step of stage that fails
    injector = _Injector(_failures(step)[kind])
    progress = None
    if step == "progress callback":
        progress = injector.progress
    else:
        owner, attr = _targets(fmt)[step]
        original = getattr(owner, attr)
        when = (lambda *a, prefix=None, **k: prefix == "jms-stage-") if attr == "mkdtemp" else None
        monkeypatch.setattr(owner, attr, injector.wrap(original, *([when] if when else [])))
    before = _snapshot(MODEL)
    # When it is staged
    with pytest.raises(BaseException) as caught:
        jms.stage(MODEL, X, format=fmt, progress=progress)
    monkeypatch.undo()
    # Then the injected failure is what surfaced (KeyboardInterrupt unchanged), at that step
    assert injector.fired, f"stage never reached {step}"
    assert _raised_the_injected(caught.value, injector.error), repr(caught.value)
    del caught
    # And the model is exactly as it was, and no work folder is left
    _assert_same(before, _snapshot(MODEL))
    assert [p.name for p in private_tmp.iterdir() if p.name.startswith("jms-")] == []
    # And the process keeps working: a normal stage of the same model succeeds (checked after
    # an interrupt from the export on, which bypasses every `except Exception`; the other kinds
    # share one path, and before the export nothing has run yet)
    if kind == "keyboard interrupt" and step not in BEFORE_EXPORT:
        staged = jms.stage(MODEL, X, format=fmt)
        assert staged.report.passed
        staged.discard()
        _assert_same(before, _snapshot(MODEL))


@pytest.mark.parametrize("fmt", list(FORMAT_CLASS))
def test_real_bad_inputs_and_a_real_export_failure_leave_the_model_as_it_was(fmt, private_tmp):
    before = _snapshot(MODEL)
    with pytest.raises(jms.InvalidOptionError):  # the reference forward fails on this shape
        jms.stage(MODEL, torch.randn(4, 5), format=fmt)
    with pytest.raises(jms.InvalidOptionError):  # refused after the forward pass, before export
        jms.stage(MODEL, X, format=fmt, dynamic_axes={"x": {7: "batch"}})
    _assert_same(before, _snapshot(MODEL))
    assert list(private_tmp.iterdir()) == []


def test_backward_hooks_do_not_block_tracing_and_stay_registered():
    # Given a model with a gradient hook (torch.jit.trace refuses such modules)
    model = _user_model()
    before = _snapshot(model)
    # When it is exported as TorchScript, then tracing runs without it and it is back afterwards
    staged = jms.stage(model, X, format="torchscript")
    assert staged.report.passed
    staged.discard()
    _assert_same(before, _snapshot(model))
    model(X.clone().requires_grad_()).sum().backward()  # the hook still runs, gradients flow


def test_a_training_mode_stage_never_moves_batch_norm_statistics():
    # Given a batch norm in training mode (a forward in that mode updates its running stats)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8)).train()
    stats = [b.clone() for b in model.buffers()]
    # When it is staged and checked on several probes
    for fmt in ("torchscript", "safetensors"):
        jms.stage(model, X, format=fmt).discard()
    # Then the statistics did not move and the model is still in training mode
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert model.training and model[1].training


def test_the_watch_recorder_still_records_the_users_next_call():
    model = _user_model()
    with pytest.raises(KeyboardInterrupt):
        jms.stage(model, X, progress=_Injector(KeyboardInterrupt()).progress)
    x = torch.randn(2, 6)
    model(x)
    assert torch.equal(discovery.last_inputs(model).args[0], x)


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "onnx"])
def test_ctrl_c_during_any_forward_call_of_stage_leaves_the_model_as_it_was(fmt, private_tmp):
    """A KeyboardInterrupt from inside the model's forward, whichever of stage's forward calls
    it hits: the reference run, the exporter's trace, or a parity probe."""
    # Given a fresh model (no cached export) whose forward can be made to raise at its n-th call
    model = _user_model()
    calls = {"n": 0, "raise_at": None}

    def pre_hook(module: nn.Module, args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == calls["raise_at"]:
            raise KeyboardInterrupt

    model.head.register_forward_pre_hook(pre_hook)
    before = _snapshot(model)
    options = {"exporter": "torchscript"} if fmt == "onnx" else {}  # the dynamo one is cached
    options["latency"] = {"max_runs": 2, "max_seconds": 600}  # a fixed count of eager calls
    jms.stage(model, X, format=fmt, **options).discard()
    total = calls["n"]
    assert total >= 4  # the reference run, the export, three parity probes (some traced)
    for raise_at in range(1, total + 1):
        calls.update(n=0, raise_at=raise_at)
        # When Ctrl-C lands in that call, then it surfaces as KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            jms.stage(model, X, format=fmt, **options)
        # And the model and the temp folder are as they were
        _assert_same(before, _snapshot(model))
        assert [p.name for p in private_tmp.iterdir() if p.name.startswith("jms-")] == []
    # And a normal stage still succeeds
    calls.update(n=0, raise_at=None)
    staged = jms.stage(model, X, format=fmt, **options)
    assert staged.report.passed
    staged.discard()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("step", ["format export", "parity forward"])
@pytest.mark.parametrize("device", [None, "cpu"], ids=["on its GPU", "copied to the CPU"])
def test_a_cuda_out_of_memory_error_leaves_a_gpu_model_on_its_gpu(step, device, monkeypatch):
    # Given a model on the GPU, and a stage (there, or of a CPU copy) that runs out of GPU memory
    model = _user_model().cuda()
    x = X.cuda()
    injector = _Injector(_failures(step)["cuda oom"])
    owner, attr = _targets("torchscript")[step]
    monkeypatch.setattr(owner, attr, injector.wrap(getattr(owner, attr)))
    before = _snapshot(model)
    # When it is staged, then the OOM surfaces and the model is untouched, still on the GPU
    with pytest.raises((torch.cuda.OutOfMemoryError, jms.ModelSaveError)):
        jms.stage(model, x, format="torchscript", device=device)
    monkeypatch.undo()
    _assert_same(before, _snapshot(model))
    assert all(p.is_cuda for p in model.parameters())
    staged = jms.stage(model, x, format="torchscript", device=device)
    assert staged.report.passed
    staged.discard()
