"""The release check: precision variants judged against the live model, latency, the diff.

Given a small CNN (most of its bytes in convolution weights, as in real ones), when it is staged
as fp16 / int8 / a cast safetensors copy, then the variant is smaller, passes its precision's
parity rule with task-level agreement, and the live model keeps its dtype and device. Writing a
new version into a folder compares it with the previous one.
"""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import jupyter_modelsave as jms
from jupyter_modelsave.core import _ort
from jupyter_modelsave.core import precision as variants
from jupyter_modelsave.core.parity import OutputDiff, ParityReport, ProbeResult

FAST = {"max_runs": 3, "max_seconds": 0.5}  # latency in tests: a few runs


class CNN(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.head = nn.Linear(2 * width, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1))


def _cnn(width: int = 16, seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    return CNN(width)


@pytest.fixture(scope="module")
def cnn() -> CNN:
    return _cnn()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(8, 3, 16, 16)


@pytest.fixture(scope="module")
def fp32(cnn, image):
    return jms.stage(cnn, image, latency=FAST)


@pytest.fixture(scope="module")
def fp16(cnn, image):
    return jms.stage(cnn, image, precision="fp16", latency=FAST)


@pytest.fixture(scope="module")
def int8(cnn, image):
    return jms.stage(cnn, image, precision="int8", latency=FAST)


def _state(model: nn.Module) -> list[tuple]:
    return [(n, t.dtype, t.device, t.clone()) for n, t in model.state_dict().items()]


def _same(before: list[tuple], model: nn.Module) -> bool:
    after = _state(model)
    return all(a[:3] == b[:3] and torch.equal(a[3], b[3]) for a, b in zip(before, after))


def _graph_dtypes(path) -> set[int]:
    proto = onnx.load(str(path))
    return {t.data_type for t in proto.graph.initializer}


# --- precision variants ---


def test_fp16_onnx_is_about_half_the_size_and_passes_fp16_parity(fp32, fp16):
    ratio = fp16.size_bytes / fp32.size_bytes
    assert 0.4 <= ratio <= 0.65, ratio
    assert fp16.precision == "fp16" and fp32.precision == "fp32"
    assert fp16.variant["size_ratio"] == pytest.approx(ratio, abs=1e-3)
    report = fp16.report
    assert report.passed, report.diagnosis
    assert report.precision == "fp16" and (report.atol, report.rtol) == (1e-2, 1e-2)
    assert report.agreement["outputs"]["output"]["metric"] == "top1"
    assert report.summary().startswith("fp16 parity passed")
    # weights and compute in fp16, the interface kept in float32
    proto = onnx.load(str(fp16.path))
    assert onnx.TensorProto.FLOAT16 in _graph_dtypes(fp16.path)
    assert onnx.TensorProto.FLOAT not in _graph_dtypes(fp16.path)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    onnx.checker.check_model(proto)


def test_a_variant_of_the_same_model_is_the_same_bytes(cnn, image, fp16, int8):
    assert jms.stage(cnn, image, precision="fp16", latency=False).sha256 == fp16.sha256
    assert jms.stage(cnn, image, precision="int8", latency=False).sha256 == int8.sha256


def test_int8_is_under_045x_and_its_report_gives_top1_agreement(fp32, int8):
    assert int8.size_bytes / fp32.size_bytes < 0.45
    agreement = int8.report.agreement
    assert agreement["element_wise"] is False  # int8: judged by agreement
    top1 = agreement["outputs"]["output"]
    assert top1["metric"] == "top1" and 0.0 <= top1["value"] <= 1.0
    assert top1["rows"] >= 8 * len(int8.report.probes)  # pooled over every probe's rows
    assert "top-1 agreement" in int8.report.summary()
    assert int8.report.passed == (top1["value"] >= 0.9)
    ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    assert ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}, ops


def test_int8_with_explicit_tolerances_is_also_judged_element_wise(int8):
    strict = int8.verify(atol=1e-7, rtol=0.0)
    assert strict.agreement["element_wise"] is True
    assert not strict.passed  # quantization moves values by far more than 1e-7
    again = int8.verify()  # the last tolerances, still element-wise
    assert not again.passed and int8.report is again


def test_static_int8_calibrates_on_the_example_the_probes_and_given_inputs(cnn, image):
    extra = [torch.randn(2, 3, 16, 16), (torch.randn(3, 3, 16, 16),)]
    staged = jms.stage(cnn, image, precision="int8", calibration=extra, latency=False,
                       dynamic_axes={"image": {0: "batch"}})  # fmt: skip
    ops = {n.op_type for n in onnx.load(str(staged.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "quantize_static" in staged.variant["method"]
    assert staged.report.agreement["outputs"]["output"]["metric"] == "top1"
    for bad in ([torch.zeros(8, 3, 16, 16).long()], [torch.zeros(8, 3, 12, 16)], ["x"],
                [(torch.zeros(8, 3, 16, 16), torch.zeros(1))]):  # fmt: skip
        with pytest.raises(jms.InvalidOptionError, match=r"calibration\[0\]"):
            jms.stage(cnn, image, precision="int8", calibration=bad, latency=False)


def test_the_live_model_keeps_its_dtype_device_values_and_mode(image):
    model = _cnn().train()
    before = _state(model)
    for options in ({"precision": "fp16"}, {"precision": "int8"},
                    {"format": "safetensors", "precision": "bf16"}):  # fmt: skip
        staged = jms.stage(model, image, latency=FAST, **options)
        staged.discard()
        assert _same(before, model), options
        assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
        assert all(p.device.type == "cpu" for p in model.parameters())


def test_safetensors_half_variants_are_cast_copies_with_tied_weights_kept():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.head = nn.Linear(8, 20, bias=False)
            self.head.weight = self.embed.weight
            self.register_buffer("steps", torch.tensor([3, 4]))

    model = Tied()
    staged = jms.stage(model, format="safetensors", precision="fp16")
    assert staged.report.passed and staged.report.precision == "fp16"
    state = jms.load(staged.path, trusted=True)
    assert state["embed.weight"].dtype == torch.float16 and state["steps"].dtype == torch.int64
    assert state["head.weight"] is state["embed.weight"]  # one tensor, two names
    assert torch.equal(state["embed.weight"], model.embed.weight.detach().half())
    assert model.embed.weight.dtype == torch.float32


def test_a_weight_beyond_fp16_range_fails_fp16_parity_and_passes_bf16():
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight[0, 0] = 1e6
    fp16 = jms.stage(model, format="safetensors", precision="fp16")
    assert not fp16.report.passed
    assert any("weight" in n and "fp16" in n for n in fp16.report.diagnosis)
    assert jms.stage(model, format="safetensors", precision="bf16").report.passed


def test_a_model_in_its_own_half_dtype_stages_as_that_precision():
    model = nn.Linear(4, 2).half()
    staged = jms.stage(model, format="safetensors")
    assert staged.precision == "fp16" and staged.variant is None and staged.report.passed
    assert staged.manifest("m", "1.0.0")["precision"] == "fp16"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"precision": "fp8"}, "is not one of fp32, fp16, bf16, int8"),
        ({"precision": "FP16"}, "is not one of"),
        ({"precision": 16}, "is not one of"),
        ({"precision": ["fp16"]}, "is not one of"),
        ({"format": "safetensors", "precision": "int8"}, "takes precision fp32, fp16, bf16, not"),
        ({"format": "torchscript", "precision": "fp16"}, "Formats with fp16: onnx, safetensors"),
        ({"format": "torch_export", "precision": "int8"}, "Formats with int8: onnx."),
        ({"precision": "fp16", "calibration": True}, "calibration= applies to precision='int8'"),
        ({"precision": "int8", "calibration": "yes"}, "calibration must be True"),
        ({"latency": "fast"}, "latency must be True, False or a dict"),
        ({"latency": {"max_runs": 0}}, "latency must be"),
        ({"latency": {"max_runs": True}}, "latency must be"),
        ({"latency": {"max_seconds": -1}}, "latency must be"),
        ({"latency": {"max_seconds": float("nan")}}, "latency must be"),
        ({"latency": {"runs": 3}}, "latency must be"),
    ],
)
def test_bad_precision_options_say_what_the_format_and_runtime_take(cnn, image, options, says):
    with pytest.raises(jms.InvalidOptionError, match=says.replace("(", r"\(").replace(".", r"\.")):
        jms.stage(cnn, image, **options)


@pytest.mark.skipif(_ort.has_bf16(), reason="this ONNX Runtime has bf16 kernels")
def test_bf16_onnx_on_a_runtime_without_bf16_kernels_names_what_it_takes(cnn, image):
    with pytest.raises(jms.InvalidOptionError) as caught:
        jms.stage(cnn, image, precision="bf16")
    message = str(caught.value)
    assert "takes fp32, fp16, bf16, int8" in message and "here it takes fp32, fp16, int8" in message
    assert jms.precisions("onnx") == ["fp32", "fp16", "int8"]


def test_variants_are_made_from_float32_models_only(image):
    with pytest.raises(jms.InvalidOptionError, match="made from a float32 model; this one is fp16"):
        jms.stage(nn.Linear(4, 2).half(), torch.randn(2, 4).half(), precision="int8")


def test_bf16_conversion_keeps_the_interface_and_rounds_weights_from_fp32(fp32):
    proto = onnx.load(str(fp32.path))
    originals = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    converted = variants._half(proto, "bf16")
    onnx.checker.check_model(converted)
    kinds = {t.data_type for t in converted.graph.initializer}
    assert onnx.TensorProto.BFLOAT16 in kinds and onnx.TensorProto.FLOAT16 not in kinds
    assert converted.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    for tensor in converted.graph.initializer:
        if tensor.data_type == onnx.TensorProto.BFLOAT16 and tensor.name in originals:
            expected = torch.tensor(originals[tensor.name]).to(torch.bfloat16)
            got = np.frombuffer(tensor.raw_data, dtype=np.int16)
            assert np.array_equal(got, expected.view(torch.int16).numpy().ravel())
    casts = [a.i for n in converted.graph.node if n.op_type == "Cast" for a in n.attribute]
    assert onnx.TensorProto.FLOAT16 not in casts


# --- judging by agreement ---


def _report(outputs: dict[str, list[tuple[list[int], float | None, float]]]) -> ParityReport:
    """A report with one probe per entry: (shape, top-1 agreement, cosine) per output."""
    count = max(len(v) for v in outputs.values())
    probes = []
    for i in range(count):
        diffs = [OutputDiff(name, shape, 1e-3, 1e-3, 0.0, cos, 0.0, top1_agreement=top1)
                 for name, rows in outputs.items() for shape, top1, cos in rows[i:i + 1]]  # fmt: skip
        probes.append(ProbeResult(f"p{i}", True, diffs))
    return ParityReport(True, 0.1, 0.1, probes, "cpu", False)


def test_class_scores_are_judged_by_pooled_top1_and_the_rest_by_cosine():
    report = variants.judge(
        _report({
            "logits": [([8, 10], 1.0, 0.9999), ([2, 10], 0.5, 0.9999)],  # 9 of 10 rows agree
            "features": [([8, 4, 2, 2], 0.1, 0.995), ([2, 4, 2, 2], 0.1, 0.9999)],
        }),
        "int8",
        element_wise=False,
    )  # fmt: skip
    logits, features = (report.agreement["outputs"][k] for k in ("logits", "features"))
    assert logits["metric"] == "top1" and logits["value"] == pytest.approx(0.9)
    assert features["metric"] == "cosine" and features["value"] == pytest.approx(0.995)
    assert report.passed  # int8: top-1 >= 0.9, cosine >= 0.99
    fp16 = variants.judge(_report({"features": [([8, 4, 2, 2], None, 0.995)]}), "fp16")
    assert not fp16.passed  # fp16 needs cosine >= 0.999
    assert any("below the fp16 threshold" in n for n in fp16.diagnosis)


def test_a_3d_logits_output_is_class_scores_and_a_hidden_state_is_not():
    assert variants.is_class_scores("logits", [2, 7, 50])
    assert not variants.is_class_scores("last_hidden_state", [2, 7, 16])
    assert variants.is_class_scores("output", [4, 10])
    assert not variants.is_class_scores("output", [4, 1])


# --- latency ---


def test_latency_is_measured_bounded_and_recorded_in_the_manifest(fp16, tmp_path):
    latency = fp16.latency
    assert set(latency) >= {"p50_ms", "p95_ms", "eager_p50_ms", "device", "batch"}
    assert latency["device"] == "cpu" and latency["batch"] == 8
    assert latency["runtime"] == "onnxruntime CPUExecutionProvider"
    assert 1 <= latency["runs"] <= 3 and 1 <= latency["eager_runs"] <= 3
    assert 0 < latency["p50_ms"] <= latency["p95_ms"]
    path = fp16.write(tmp_path / "fp16.onnx")
    manifest = json.loads((tmp_path / "fp16.onnx.json").read_text())
    assert manifest["latency"] == latency and manifest["precision"] == "fp16"
    assert manifest["variant"]["method"].startswith("onnxruntime float16 converter")
    assert path.exists()


def test_latency_stops_at_its_time_budget_for_a_slow_model():
    class Slow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.05)
            return self.lin(x)

    staged = jms.stage(Slow(), torch.randn(2, 4), format="torchscript", parity=False,
                       latency={"max_runs": 50, "max_seconds": 0.2})  # fmt: skip
    assert 1 <= staged.latency["eager_runs"] <= 3  # each run sleeps 50 ms, 0.1 s per side
    assert staged.latency["runtime"] == "torch (torchscript)"


def test_latency_false_skips_it_and_weight_formats_have_none(cnn, image):
    assert jms.stage(cnn, image, latency=False).latency is None
    assert jms.stage(cnn, image, format="safetensors").latency is None


# --- the diff against the previous version ---


def test_writing_v2_of_a_3x_wider_model_warns_about_size_and_records_the_previous(image, tmp_path):
    first = jms.export(_cnn(16), tmp_path, image, name="cnn", latency=False)
    staged = jms.stage(_cnn(48, seed=1), image, name="cnn", latency=False)
    diff = staged.diff(tmp_path)
    assert diff["previous_version"] == "1.0.0" and diff["previous_path"] == str(first)
    assert diff["size_ratio"] > 1.5 and diff["signature_changed"] == {}
    assert diff["compared"] == "outputs" and diff["max_abs"] > 0 and -1 <= diff["cosine"] <= 1
    assert any(w.startswith("size grew") for w in diff["warnings"])
    path = staged.write(tmp_path)
    previous = json.loads(path.with_name(path.name + ".json").read_text())["previous"]
    assert previous["version"] == "1.0.0" and previous["path"] == first.name
    assert previous["warnings"] == diff["warnings"]
    assert "_v1.0.1_" in path.name


def test_the_fp16_variant_of_the_same_model_changes_precision_not_outputs(
    cnn, image, tmp_path, fp16
):
    jms.export(cnn, tmp_path, image, name="cnn", latency=False)
    diff = fp16.diff(tmp_path, name="cnn")
    assert diff["signature_changed"] == {"precision": {"before": "fp32", "after": "fp16"}}
    assert diff["cosine"] > 0.999 and diff["max_abs"] < 1e-2
    assert not any("drifted" in w for w in diff["warnings"])
    assert any(w.startswith("size shrank") for w in diff["warnings"])
    assert any(w.startswith("precision changed") for w in diff["warnings"])


def test_signature_changes_name_the_inputs_axes_and_opset(cnn, image, tmp_path):
    jms.export(cnn, tmp_path, image, name="cnn", opset=17, latency=False)
    staged = jms.stage(cnn, image, name="cnn", opset=18, dynamic_axes={"image": {0: "batch"}},
                       latency=False)  # fmt: skip
    changed = staged.diff(tmp_path)["signature_changed"]
    assert changed["opset"] == {"before": 17, "after": 18}
    assert changed["dynamic_axes"]["after"] == {"image": {"0": "batch"}}
    assert changed["inputs"]["after"][0]["shape"] == ["batch", 3, 16, 16]


def test_no_previous_version_means_no_diff_and_no_previous_in_the_manifest(fp32, tmp_path):
    assert fp32.diff(tmp_path) is None
    assert fp32.diff(tmp_path / "missing") is None
    path = fp32.write(tmp_path)
    assert "previous" not in json.loads(path.with_name(path.name + ".json").read_text())
    assert fp32.diff(tmp_path, name="another") is None


def test_weight_formats_compare_their_tensors(tmp_path):
    model = nn.Linear(4, 3)
    jms.export(model, tmp_path, format="safetensors", name="lin")
    with torch.no_grad():
        model.weight.add_(0.5)
    staged = jms.stage(model, format="safetensors", name="lin")
    diff = staged.diff(tmp_path)
    assert diff["compared"] == "weights" and diff["max_abs"] == pytest.approx(0.5, abs=1e-6)


def test_a_tampered_previous_version_is_not_compared_and_write_still_succeeds(cnn, image, tmp_path):
    first = jms.export(cnn, tmp_path, image, name="cnn", latency=False)
    first.write_bytes(first.read_bytes() + b"\0")
    staged = jms.stage(cnn, image, name="cnn", latency=False)
    diff = staged.diff(tmp_path)
    assert diff["compared"] is None and "IntegrityError" in diff["notes"][0]
    assert staged.write(tmp_path).exists()


def test_another_kind_of_format_is_compared_by_signature_only(cnn, image, tmp_path):
    jms.export(cnn, tmp_path, image, name="cnn", latency=False)
    diff = jms.stage(cnn, format="safetensors", name="cnn").diff(tmp_path)
    assert diff["compared"] is None and "hold different things" in diff["notes"][0]
    assert diff["signature_changed"]["format"] == {"before": "onnx", "after": "safetensors"}


def test_diff_refuses_bad_destinations_and_discarded_exports(cnn, image):
    staged = jms.stage(cnn, image, latency=False)
    with pytest.raises(jms.InvalidOptionError):
        staged.diff(None)
    with pytest.raises(jms.InvalidOptionError):
        staged.diff("folder/", name="../x")
    staged.discard()
    with pytest.raises(jms.InvalidOptionError, match="discarded"):
        staged.diff("folder/")
