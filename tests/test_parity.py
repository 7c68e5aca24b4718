"""The parity comparison itself, on arrays whose answer is known."""

import numpy as np

from jupyter_modelsave.core.parity import ProbeResult, compare_output, diagnose

REF = np.linspace(-1, 1, 200, dtype=np.float32).reshape(20, 10)


def test_identical_outputs_pass_with_zero_error():
    diff = compare_output("y", REF, REF.copy(), 1e-4, 1e-3)
    assert diff.passed and diff.max_abs == 0 and diff.mismatch_fraction == 0
    assert diff.cosine == 1.0 and diff.top1_agreement == 1.0


def test_mismatch_uses_atol_plus_rtol_times_reference():
    got = REF.copy()
    got[0, 0] += 0.01  # |ref| = 1, so the bound is 1e-4 + 1e-3 * 1 = 1.1e-3
    diff = compare_output("y", REF, got, 1e-4, 1e-3)
    assert not diff.passed
    assert diff.mismatch_fraction == 1 / REF.size
    assert np.isclose(diff.max_abs, 0.01, rtol=1e-3)
    # the smallest atol that passes at rtol 1e-3 is 0.01 - 1e-3 * 1
    assert np.isclose(diff.min_atol, 0.01 - 1e-3, rtol=1e-2)
    assert compare_output("y", REF, got, diff.min_atol * 1.01, 1e-3).passed


def test_shape_mismatch_fails_before_values_are_compared():
    diff = compare_output("y", REF, REF[:5], 1e-4, 1e-3)
    assert not diff.passed and "live [20, 10] vs artifact [5, 10]" in diff.shape_mismatch


def test_nan_matches_only_nan():
    ref = np.array([[1.0, np.nan]])
    assert compare_output("y", ref, ref.copy(), 0, 0).passed
    assert not compare_output("y", ref, np.array([[1.0, 2.0]]), 0, 0).passed


def test_float_drift_and_a_broken_graph_read_differently():
    drift = compare_output("y", REF, REF * 1.01, 1e-4, 1e-3)
    broken = compare_output("y", REF, np.random.default_rng(0).permutation(REF.ravel()).reshape(20, 10),
                            1e-4, 1e-3)  # fmt: skip
    notes = diagnose([ProbeResult("example", False, [drift]), ProbeResult("random", False, [broken])],
                     1e-4, 1e-3)  # fmt: skip
    assert "float drift" in notes[0] and "would pass" in notes[0]
    assert "computes something different" in notes[1]
    assert broken.top1_agreement < 0.5 < drift.top1_agreement


def test_divergence_only_off_the_example_points_at_a_traced_branch():
    ok = compare_output("y", REF, REF, 1e-4, 1e-3)
    bad = compare_output("y", REF, -REF, 1e-4, 1e-3)
    notes = diagnose([ProbeResult("example", True, [ok]), ProbeResult("random normal", False, [bad])],
                     1e-4, 1e-3)  # fmt: skip
    assert any("data-dependent branch" in n for n in notes)


def test_equal_infinities_agree_and_unequal_ones_do_not():
    ref = np.array([[np.inf, -np.inf]])
    assert compare_output("y", ref, ref.copy(), 0, 0).passed
    assert not compare_output("y", ref, np.array([[np.inf, 0.0]]), 0, 0).passed


def test_weights_round_trip_must_be_bitwise_with_the_same_dtype():
    import torch

    from jupyter_modelsave.core.verify import weights_parity

    net = torch.nn.Linear(3, 2)
    same = {k: v.clone() for k, v in net.state_dict().items()}
    assert weights_parity(net, same).passed
    nudged = dict(same, weight=same["weight"] + 1e-7)
    halved = dict(same, bias=same["bias"].half())
    report = weights_parity(net, nudged)
    assert not report.passed and report.kind == "weights"
    assert "weight: not bitwise equal (values differ)." in report.diagnosis
    assert "dtype torch.float32 became torch.float16" in " ".join(
        weights_parity(net, halved).diagnosis
    )
    assert not weights_parity(net, {"weight": same["weight"]}).passed


def _direct(ref, got, atol, rtol):
    """The statistics computed on whole float64 arrays, as a check of the chunked pass."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got - ref)
    bound = atol + rtol * np.abs(ref)
    rows_ref, rows_got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    return {
        "max_abs": diff.max(),
        "mismatch_fraction": (diff > bound).mean(),
        "cosine": (ref * got).sum() / np.sqrt((ref * ref).sum() * (got * got).sum()),
        "min_atol": max(0.0, (diff - rtol * np.abs(ref)).max()),
        "top1_agreement": (rows_ref.argmax(-1) == rows_got.argmax(-1)).mean(),
    }


def test_large_outputs_are_compared_in_chunks_with_the_same_statistics():
    # Given outputs far bigger than one comparison chunk, wrong in the last rows only
    rng = np.random.default_rng(0)
    for shape in [(40, 5000), (3, 70_000)]:  # many rows per chunk; rows wider than a chunk
        ref = rng.standard_normal(shape).astype(np.float32)
        got = ref.copy()
        got[-1, -3:] = got[-1, -3:] * 1.5 + 1.0
        # When compared
        diff = compare_output("logits", ref, got, 1e-4, 1e-3)
        # Then every statistic is the whole-array one
        expected = _direct(ref, got, 1e-4, 1e-3)
        assert not diff.passed
        for key, value in expected.items():
            assert np.isclose(getattr(diff, key), value, rtol=1e-9, atol=1e-12), key


def test_the_same_drift_on_several_probes_is_explained_once():
    # Issue 16.6: one explanation per output and kind, naming the probes, not one per probe
    drift = compare_output("y", REF, REF * 1.01, 1e-4, 1e-3)
    more = compare_output("y", REF, REF * 1.02, 1e-4, 1e-3)
    probes = [ProbeResult(name, False, [d]) for name, d in
              (("example", drift), ("random normal", more), ("batch=3", drift))]  # fmt: skip
    notes = diagnose(probes, 1e-4, 1e-3)
    assert len(notes) == 1
    assert "output 'y' on probes 'example', 'random normal', 'batch=3': float drift" in notes[0]
    assert f"atol={more.min_atol:.3g} would pass" in notes[0]  # enough for every probe


def test_the_notebook_verdict_keeps_the_themes_text_colour():
    # Issue 16.5: the verdict's colour is a border (a fixed text colour fails in the dark theme)
    ok = compare_output("y", REF, REF, 1e-4, 1e-3)
    from jupyter_modelsave.core.parity import ParityReport

    text = ParityReport(True, 1e-4, 1e-3, [ProbeResult("example", True, [ok])], "cpu", False)
    html_text = text._repr_html_()
    assert "border-left:4px solid var(--jp-success-color1" in html_text
    assert "color:#" not in html_text.replace(" ", "")


def test_the_notebook_verdict_mark_follows_the_report_not_its_last_row():
    # every output within tolerance, but the report failed (e.g. values baked into the graph)
    from jupyter_modelsave.core.parity import ParityReport

    ok = compare_output("y", REF, REF, 1e-4, 1e-3)
    report = ParityReport(False, 1e-4, 1e-3, [ProbeResult("example", True, [ok])], "cpu", False,
                          value_conversions=["x.sum() > 0 became a Python bool"])  # fmt: skip
    verdict = report._repr_html_().split("</b>")[0]
    assert "&#10007;" in verdict and "&#10003;" not in verdict
