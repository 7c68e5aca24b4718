"""Bad input at the public API and the ``%modelsave`` magic: every case ends in a
``jms.ModelSaveError`` (the magic: a usage message or a one-line error), never an unrelated
exception, a hang (each example runs under a SIGALRM guard) or a file outside the destination.

``tests/test_properties.py`` already throws junk at ``stage``'s plain options, at
``check_dynamic_axes``, at ``write``'s name and version, and garbage files and strings at ``load``
and ``from_base64``. This suite adds what it does not: odd tensors (dtypes, meta, sparse, nested,
non-contiguous) and containers into every format, dynamic axes through the real exporters (empty
and huge specs), destinations, flags and tolerances of ``write``/``export``/``verify``, the
argument types of ``load``/``load_into``/``to_base64``/``from_base64``, and the magic's command line.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import jupyter_modelsave as jms

from .. import models
from ._guards import no_hang

MODEL = models.mlp()
X = torch.randn(2, 8)
# derandomize: the same examples on every run (see tests/test_properties.py)
SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
GUARD_S = 30  # an example still running after this long counts as a hang


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


HUGE = 10**5000  # over Python's int-to-str limit: repr() of it raises ValueError
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just(object()),
    # the classes of hostile input the Comm gets too: huge ints, deep nesting, odd unicode
    st.sampled_from([HUGE, -HUGE, 10**400, "\ud800", "a\u202eb", "x" * 100_000]),
    st.integers(min_value=50, max_value=5000).map(_nested),
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Cf"]), min_size=1, max_size=4),
)
odd_names = st.sampled_from(
    ["../x", "/abs/x", "a\x00b", "..", ".", "", " ", "ü" * 200, "名前", "a/b", "x" * 300, "con",
     "-", "~", "$HOME", "a b", "\n", "model.onnx", "\\\\server\\share"]
)  # fmt: skip
FORMATS = ["onnx", "torchscript", "torch_export", "safetensors", "state_dict", "checkpoint"]
CHEAP = {"onnx": {"exporter": "torchscript"}}  # the dynamo exporter is covered elsewhere


def _attempt(call: Callable[[], Any]) -> Any:
    """``call()``: a result, or None after a ModelSaveError; anything else fails the test."""
    with no_hang(GUARD_S):
        try:
            result = call()
        except jms.ModelSaveError as err:
            assert str(err)
            return None
    if isinstance(result, jms.StagedExport):
        result.discard()
    return result


@contextlib.contextmanager
def _sandbox() -> Iterator[Path]:
    """A fresh cwd two levels down in a temporary root, which is also $HOME; yields the root."""
    with tempfile.TemporaryDirectory() as root:
        cwd = Path(root) / "work" / "cwd"
        cwd.mkdir(parents=True)
        home = os.environ.get("HOME")
        os.environ["HOME"] = root  # "~/" destinations stay inside
        try:
            with contextlib.chdir(cwd):
                yield Path(root)
        finally:
            if home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = home


def _rooted(dest: Any, root: Path) -> Any:
    """Absolute destinations are drawn as ``{root}/...``: inside the sandbox, never in /."""
    return dest.replace("{root}", str(root)) if isinstance(dest, str) else dest


def _inside(root: Path, path: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


# ------------------------------------------------------------------ example inputs, every format

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8,
          torch.uint8, torch.bool, torch.complex64]  # fmt: skip


def _nested(t: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "nested tensors are a prototype"
        warnings.simplefilter("ignore", UserWarning)
        return torch.nested.nested_tensor([t, t])


def _odd(t: torch.Tensor, how: str) -> torch.Tensor:
    if how == "meta":
        return t.to("meta")
    if how == "sparse":
        return t.to_sparse()
    if how == "non-contiguous" and t.dim() >= 2:
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if how == "requires_grad" and t.is_floating_point():
        return t.requires_grad_()
    if how == "nested" and t.dim() >= 1:
        return _nested(t)
    return t


tensors = st.builds(
    lambda dtype, shape, how: _odd(torch.zeros(shape).to(dtype), how),
    st.sampled_from(DTYPES),
    st.one_of(st.just([2, 8]), st.lists(st.integers(0, 9), max_size=4)),
    st.sampled_from(["plain", "meta", "sparse", "non-contiguous", "requires_grad", "nested"]),
)
containers = st.one_of(
    tensors,
    st.tuples(tensors),
    st.lists(tensors, min_size=0, max_size=3),
    st.dictionaries(st.one_of(st.just("input"), st.text(max_size=5)), tensors, max_size=2),
    st.lists(st.lists(tensors, max_size=1), max_size=2),
    junk,
)


@SETTINGS
@given(example=containers, fmt=st.sampled_from(FORMATS))
@example(example=torch.zeros(2, 8, device="meta"), fmt="onnx")
@example(example=torch.zeros(2, 8).to_sparse(), fmt="torchscript")
@example(example=_nested(X), fmt="safetensors")
@example(example=torch.zeros(2, 8, dtype=torch.complex64), fmt="torch_export")
@example(example=(), fmt="checkpoint")
@example(example={"not an identifier": X}, fmt="state_dict")
@example(example=[[X]], fmt="onnx")
def test_any_example_input_into_any_format_is_staged_or_refused(example, fmt):
    _attempt(lambda: jms.stage(MODEL, example, format=fmt, **CHEAP.get(fmt, {})))


@SETTINGS
@given(
    model=st.one_of(junk, st.sampled_from([torch.nn.Module, torch, MODEL.state_dict(), X])),
    fmt=st.sampled_from(FORMATS),
)
def test_anything_but_a_model_is_refused(model, fmt):
    with no_hang(GUARD_S), pytest.raises(jms.NotAModelError):
        jms.stage(model, X, format=fmt)


def test_weights_on_the_meta_device_are_refused():
    with torch.device("meta"):
        unloaded = models.mlp()
    for fmt in FORMATS:
        with pytest.raises(jms.InvalidOptionError, match="meta device"):
            jms.stage(unloaded, X, format=fmt)
    with pytest.raises(jms.InvalidOptionError, match="meta device"):
        jms.stage(MODEL, X, device="meta", format="safetensors")


# ------------------------------------------------------------------ dynamic axes, real exporters

axis_names = st.one_of(st.sampled_from(["batch", "seq", "b a", "1x", "", "名", "batch"]), junk)
dynamic_specs = st.one_of(
    st.sampled_from(
        [
            {"input": [{}]},
            {"input": [[0]]},
            {"input": [HUGE]},
            {"input": {HUGE: "b"}},
            {"input": {0: HUGE}},
            {"input": [0.5]},
            {"input": {(0,): "b"}},
            {"input": _nested(3000)},
            {HUGE: [0]},
            {"\ud800": [0]},
            {"input": {0: "\ud800"}},
        ]
    ),
    st.just({}),
    st.just({"input": {}}),
    st.builds(lambda n: {"input": list(range(n))}, st.sampled_from([1, 3, 10**5])),
    st.builds(lambda n: {"input": {i: f"d{i}" for i in range(n)}}, st.sampled_from([2, 10**4])),
    st.builds(lambda n: {f"t{i}": {0: "b"} for i in range(n)}, st.sampled_from([2, 10**4])),
    st.dictionaries(
        st.sampled_from(["input", "output", "x", "../x"]),
        st.one_of(
            st.dictionaries(st.integers(-4, 4), axis_names, max_size=3),
            st.lists(st.integers(-4, 4), max_size=3),
            junk,
        ),
        max_size=2,
    ),
)


@SETTINGS
@given(axes=dynamic_specs, fmt=st.sampled_from(["onnx", "torch_export", "torchscript"]))
@example(axes={"input": list(range(10**5))}, fmt="onnx")
@example(axes={"input": {i: f"d{i}" for i in range(10**4)}}, fmt="torch_export")
@example(axes={f"t{i}": {0: "b"} for i in range(10**4)}, fmt="onnx")
@example(axes={"input": {1: "features"}}, fmt="torch_export")  # Linear fixes it: not dynamic
@example(axes={"input": {0: "batch"}, "output": {0: "batch"}}, fmt="torch_export")
@example(axes={"input": {0: ""}}, fmt="onnx")
@example(axes={"input": [{}]}, fmt="onnx")
@example(axes={"input": [HUGE]}, fmt="torch_export")
def test_any_dynamic_axes_through_the_exporters_is_staged_or_refused(axes, fmt):
    staged = _attempt(
        lambda: jms.stage(MODEL, X, format=fmt, dynamic_axes=axes, **CHEAP.get(fmt, {}))
    )
    assert staged is None or isinstance(staged, jms.StagedExport)


@pytest.mark.parametrize(
    "axes",
    [{"input": [{}]}, {"input": [[0]]}, {"input": [0.5]}, {"input": [True]}, {"input": ["0"]},
     {"input": [HUGE]}, {"input": {HUGE: "b"}}, {HUGE: [0]}, {"output": {HUGE: "b"}},
     {"input": {0: HUGE}}, {"input": _nested(3000)}],
    ids=lambda axes: "axes",
)  # fmt: skip
def test_dynamic_axes_of_the_wrong_kind_are_an_invalid_option(axes):
    # The list form used to build a dict of its items first: {"input": [{}]} was a TypeError
    with no_hang(GUARD_S), pytest.raises(jms.InvalidOptionError, match="dynamic_axes") as err:
        jms.stage(MODEL, X, format="onnx", exporter="torchscript", dynamic_axes=axes)
    assert len(str(err.value)) < 500  # a huge value is named, not printed


# ------------------------------------------------------------------ write, export, verify


@pytest.fixture(scope="module")
def staged():
    s = jms.stage(MODEL, X, exporter="torchscript")
    yield s
    s.discard()


destinations = st.one_of(
    odd_names.filter(lambda n: not n.startswith("/")),
    odd_names.filter(lambda n: not n.startswith("/")).map(lambda n: f"{n}/"),
    st.sampled_from(["{root}/abs/x", "{root}/abs/", "{root}", "~", "~/x/"]),
    junk,
    st.just(Path("out") / "model.onnx"),
    st.just(b"bytes/"),
)
flags = st.one_of(st.booleans(), junk, st.just("False"))


@SETTINGS
@given(dest=destinations, overwrite=flags, allow_mismatch=flags, version=st.one_of(junk, odd_names))
@example(dest=None, overwrite=False, allow_mismatch=False, version=None)
@example(dest=5, overwrite=False, allow_mismatch=False, version=None)
@example(dest=b"bytes/", overwrite=False, allow_mismatch=False, version=None)
@example(dest="a\x00b/", overwrite=False, allow_mismatch=False, version=None)
@example(dest="x" * 300 + "/", overwrite=False, allow_mismatch=False, version=None)
@example(dest="~/x/", overwrite="False", allow_mismatch=False, version=None)
@example(dest="{root}/abs/", overwrite=False, allow_mismatch=1, version=object())
@example(dest="model.onnx", overwrite=False, allow_mismatch=False, version=object())
@example(dest="out/", overwrite=HUGE, allow_mismatch=False, version=HUGE)
@example(dest=HUGE, overwrite=False, allow_mismatch="\ud800", version="\ud800")
@example(dest="\ud800/", overwrite=False, allow_mismatch=False, version=None)
@example(dest="x" * 100_000, overwrite=False, allow_mismatch=False, version=None)
def test_write_anywhere_with_any_flags_stays_in_its_folder_or_is_refused(
    staged, dest, overwrite, allow_mismatch, version
):
    with _sandbox() as root:
        dest = _rooted(dest, root)
        call = lambda: staged.write(  # noqa: E731
            dest, overwrite=overwrite, allow_mismatch=allow_mismatch, version=version
        )
        path = _attempt(call)
        if path is not None:
            assert _inside(root, path)


@SETTINGS
@given(
    dest=destinations, name=st.one_of(odd_names, junk), fmt=st.one_of(junk, st.just("safetensors"))
)
def test_export_with_any_destination_name_and_format_is_written_or_refused(dest, name, fmt):
    with _sandbox() as root:
        dest = _rooted(dest, root)
        path = _attempt(lambda: jms.export(MODEL, dest, X, name=name, format=fmt))
        if path is not None:
            assert _inside(root, path)


tolerances = st.one_of(
    st.none(), junk, st.sampled_from([-1.0, float("nan"), float("inf"), "1e-3", 0, 10**400])
)


@SETTINGS
@given(atol=tolerances, rtol=tolerances)
@example(atol=10**400, rtol=None)
@example(atol=None, rtol=float("nan"))
@example(atol=-1e-300, rtol="1e-3")
@example(atol=HUGE, rtol=None)
@example(atol=None, rtol=_nested(3000))
def test_verify_with_any_tolerance_reports_or_refuses(staged, atol, rtol):
    report = _attempt(lambda: staged.verify(atol=atol, rtol=rtol))
    assert report is None or isinstance(report, jms.ParityReport)


# ------------------------------------------------------------------ load, load_into, base64


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("written")
    return jms.stage(MODEL, format="safetensors").write(folder)


paths = st.one_of(
    junk,
    odd_names,
    st.sampled_from(["/dev/null", "/", "/proc/self/status", "/nonexistent/x.pt", "x" * 5000]),
)


@SETTINGS
@given(path=paths, map_location=st.one_of(junk, st.just("cpu")), trusted=flags)
@example(path=None, map_location="cpu", trusted=False)
@example(path=5, map_location="cpu", trusted=False)
@example(path=b"x.pt", map_location="cpu", trusted=False)
@example(path="a\x00b.pt", map_location="cpu", trusted=False)
@example(path="x" * 5000, map_location="cpu", trusted=False)
@example(path="/dev/null", map_location="cpu", trusted=False)
@example(path="/", map_location=b"\xff", trusted="False")
def test_load_of_any_path_with_any_options_loads_or_refuses(path, map_location, trusted):
    _attempt(lambda: jms.load(path, map_location=map_location, trusted=trusted))


@SETTINGS
@given(
    model=st.one_of(junk, st.just(MODEL), st.just(models.SmallCNN())),
    strict=flags,
    trusted=flags,
    real=st.booleans(),
    path=paths,
)
def test_load_into_anything_loads_or_refuses(written, model, strict, trusted, real, path):
    target = written if real else path
    _attempt(lambda: jms.load_into(model, target, strict=strict, trusted=trusted))


def test_a_truthy_string_never_grants_trust(written, staged, tmp_path):
    for call in (jms.load, lambda p, trusted: jms.load_into(MODEL, p, trusted=trusted)):
        with pytest.raises(jms.InvalidOptionError, match="trusted must be True or False"):
            call(written, trusted="False")
    with pytest.raises(jms.InvalidOptionError, match="trusted must be True or False"):
        jms.from_base64(jms.to_base64(MODEL, "safetensors"), trusted="no")
    with pytest.raises(jms.InvalidOptionError, match="strict must be True or False"):
        jms.load_into(MODEL, written, strict="False")
    for flag in ("overwrite", "allow_mismatch"):
        with pytest.raises(jms.InvalidOptionError, match=f"{flag} must be True or False"):
            staged.write(tmp_path / "x.onnx", **{flag: "False"})
    assert not (tmp_path / "x.onnx").exists()


@SETTINGS
@given(
    model=st.one_of(junk, st.just(MODEL)),
    fmt=st.one_of(junk, odd_names, st.sampled_from(["state_dict", "safetensors"])),
    example=st.one_of(junk, st.just(X)),
    option=st.sampled_from([{}, {"allow_mismatch": "yes"}, {"colour": "red"}, {"atol": -1}]),
)
def test_to_base64_with_any_arguments_encodes_or_refuses(model, fmt, example, option):
    text = _attempt(lambda: jms.to_base64(model, fmt, example, **option))
    assert text is None or text.startswith("jms1:")


@SETTINGS
@given(
    text=st.one_of(junk, st.binary(max_size=40), st.just("jms1:" * 200_000)),
    map_location=st.one_of(junk, st.just("cpu")),
    trusted=flags,
)
@example(text=None, map_location="cpu", trusted=False)
@example(text=b"jms1:onnx:file:", map_location="cpu", trusted=False)
@example(text="jms1:" * 200_000, map_location="cpu", trusted=False)
def test_from_base64_of_anything_loads_or_refuses(text, map_location, trusted):
    _attempt(lambda: jms.from_base64(text, map_location=map_location, trusted=trusted))


# ------------------------------------------------------------------ the %modelsave magic


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_modelsave")
    before = set(ip.user_ns)
    ip.user_ns.update(torch=torch, net=models.mlp(), x=torch.randn(2, 8), s="text")
    yield ip
    for name in set(ip.user_ns) - before:
        del ip.user_ns[name]


_quoted_text = st.text(max_size=8).map(shlex.quote)
# each part of a %modelsave line: (valid values, invalid values)
LINE_PARTS = [
    (st.just("net"), st.one_of(st.sampled_from(["nett", "1/0", "s", "torch", "x"]), _quoted_text)),
    (st.sampled_from(["out/", "../up/", "a/b.pt", "~/h/", "net.pt"]),
     st.one_of(st.sampled_from(["", "'a\x00b/'", "'" + "x" * 300 + "/'"]), _quoted_text)),
    (st.sampled_from(["--format state_dict", "--format safetensors", "--format torchscript",
                      "--format checkpoint"]),
     st.sampled_from(["--format nope", "--format ../x", "--format", "--format ''"])),
    (st.just(""), st.sampled_from(["--opset -5", "--opset 0", "--opset 99999", "--opset x"])),
    (st.sampled_from(["--input x", "--input torch.randn(2,8)", ""]),
     st.sampled_from(["--input 1/0", "--input s", "--input None", "--input torch.randn(3)",
                      "--input torch.empty(2,8,device='meta')", "--input"])),
    (st.sampled_from(["", "--dynamic input:0=batch"]),
     st.sampled_from(["--dynamic x:0=batch", "--dynamic input:99999999999999999999=b",
                      "--dynamic input:0=b-c", "--dynamic ::=", "--dynamic input:0=ü"])),
    (st.sampled_from(["", "--rtol 1e-3", "--atol 0"]),
     st.sampled_from(["--atol nan", "--atol -1", "--atol inf", "--atol abc", "--rtol 1e999"])),
    (st.sampled_from(["", "--name ok", "--version 1.2.3", "--no-parity", "--overwrite"]),
     st.sampled_from(["--name ../x", "--name 'a\x00b'", "--version x.y", "--allow-mismatch",
                      "--colour red", "'unbalanced", "--name /abs"])),
]  # fmt: skip


@st.composite
def magic_lines(draw: Any) -> str:
    """A %modelsave line with at most one bad part, so that each fault meets its own check."""
    faulty = draw(st.integers(0, len(LINE_PARTS)))  # len(LINE_PARTS): none
    words = [draw(bad if i == faulty else good) for i, (good, bad) in enumerate(LINE_PARTS)]
    return " ".join(w for w in words if w)


@SETTINGS
@given(line=magic_lines())
@example(line="net out/ --format state_dict --input torch.empty(2,8,device='meta')")
@example(line="net out/ --format torchscript --input x --atol nan")
@example(line="net out/ --format state_dict --opset -5")
@example(line="net ../up/ --format state_dict --name ../x")
@example(line="net 'a\x00b/' --format state_dict")
@example(line="net out/ --format torchscript --input x --dynamic input:99999999999999999999=b")
def test_any_modelsave_line_gives_a_usage_message_or_a_one_line_error(shell, line):
    with _sandbox() as root, no_hang(GUARD_S), contextlib.redirect_stdout(io.StringIO()):
        try:
            shell.run_line_magic("modelsave", line)
        except UsageError as err:
            assert "usage" in str(err) or "%modelsave" in str(err) or str(err)
        except jms.ModelSaveError as err:
            # shown by IPython as "ErrorType: message", not as a traceback
            assert err._render_traceback_() == [f"{type(err).__name__}: {err}"]
        written = [p for p in root.rglob("*") if p.is_file()]
        assert all(_inside(root, p) for p in written)
