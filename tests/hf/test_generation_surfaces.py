"""``generation=True`` through the surfaces: the sidebar's kernel side, ``%modelsave``, the widget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import jupyter_modelsave as jms  # noqa: E402
import jupyter_modelsave.kernel as jk  # noqa: E402
from jupyter_modelsave import protocol  # noqa: E402

from .. import architectures as arch  # noqa: E402
from ..test_protocol import conforms  # noqa: E402

PROMPT = torch.randint(1, arch.VOCAB, (2, 5), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def lms() -> dict[str, torch.nn.Module]:
    gpt2, _ = arch.gpt2()
    t5, _ = arch.t5()
    bert, _ = arch.bert()
    return {"lm": gpt2, "t5": t5, "bert": bert}


def test_the_kernel_side_stages_a_seq2seq_generation_export_and_publishes_its_decoder(
    lms, tmp_path
):
    import onnx

    root = tmp_path / "root"
    root.mkdir()
    side = jk.ModelSaveKernel({**lms, "prompt": PROMPT}, tmp_path / "staging", root)
    try:
        # Given the sidebar's models listing (can_generate per model)
        listed = {m["name"]: m["can_generate"] for m in side.models({})["models"]}
        assert listed == {"lm": True, "t5": True, "bert": False}
        # When T5 is staged with "generation": true
        result = side.stage({"model": "t5", "example": "prompt", "generation": True})
        # Then the reply carries the greedy runs (as the protocol says), and the published
        # folder holds both graphs and a graph for Netron: the decoder, without its weights
        conforms(result, protocol.StagedReply)
        assert result["report"]["passed"] is True
        assert [r["name"] for r in result["report"]["generation"]] == [
            "prompt", "left-padded batch of 2"]  # fmt: skip
        assert result["folder_artifact"] is True
        folder = side.staging_dir / result["id"]
        assert sorted(p.name for p in (folder / result["file"]).iterdir()) == [
            "decoder_model.onnx", "encoder_model.onnx"]  # fmt: skip
        graph = onnx.load(str(folder / result["graph"]))
        assert graph.graph.input[0].name == "input_ids"
        assert "past_key_values.0.decoder.key" in [i.name for i in graph.graph.input]
        # and it writes below the root with its manifest's generation field
        written = side.write({"id": result["id"], "folder": "exports"})
        manifest = json.loads((root / written["manifest"]).read_text())
        assert manifest["generation"]["family"] == "seq2seq"
        # and a flag of another JSON type is refused, naming it
        for wrong in ("true", 1, None):
            with pytest.raises(jms.InvalidOptionError, match="'generation'"):
                side.handle("stage", {"model": "lm", "generation": wrong})
    finally:
        side.discard_all()


def test_the_magic_takes_generation_and_prints_it_in_the_equivalent_call(
    lms, tmp_path, monkeypatch, capsys
):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_modelsave")
    shell.user_ns.update(lm=lms["lm"], prompt=PROMPT)
    try:
        # When a language model is saved with --generation
        shell.run_line_magic("modelsave", "lm exports/ --input prompt --generation")
    finally:
        del shell.user_ns["lm"], shell.user_ns["prompt"]
    out = capsys.readouterr().out.splitlines()
    # Then the generation export was written and the printed call asks for it
    (artifact,) = (tmp_path / "exports").glob("lm_v1.0.0_*.onnx")
    manifest = json.loads(Path(f"{artifact}.json").read_text())
    assert manifest["generation"]["family"] == "causal_lm"
    assert manifest["parity"]["generation"][0]["live_tokens"]
    assert out[-1] == "Equivalent code: jms.export(lm, 'exports/', prompt, generation=True)"


def test_the_widget_offers_generation_for_onnx_of_models_that_can_generate(lms):
    # Given the widget over a namespace with a language model and BERT
    widget = jms.ModelSaveWidget(namespace=dict(lms))
    # When the language model is picked, for ONNX
    widget.pick("lm")
    widget.format_picker.value = "onnx"
    # Then "for generation (with cache)" is offered, and ticked it asks for generation=True
    # without dynamic axes (their names are fixed), hiding the axes editor
    assert widget.generation.layout.display is None
    assert widget.generation.description == "for generation (with cache)"
    widget.generation.value = True
    assert widget.options() == {"format": "onnx", "generation": True}
    assert widget.axes_box.layout.display == "none"
    assert "generation=True" in widget.code_text()
    # and for another format or a model that cannot generate it is neither shown nor asked for
    widget.format_picker.value = "safetensors"
    assert widget.generation.layout.display == "none" and "generation" not in widget.options()
    widget.format_picker.value = "onnx"
    widget.pick("bert")
    assert widget.generation.layout.display == "none" and "generation" not in widget.options()
