"""Generation exports (``generation=True``) of tiny random-init GPT-2, Llama-like and T5 models.

Runs against the newest transformers 5.x (the project's venv) and 4.x (``.venv-tf4``). Each
model is staged once per module (``exported``) and the tests read that one export.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import jupyter_modelsave as jms  # noqa: E402
from jupyter_modelsave.core.generation import graph_file  # noqa: E402
from jupyter_modelsave.core.generation import plan as gen  # noqa: E402
from jupyter_modelsave.core.generation.loading import Seq2SeqSessions  # noqa: E402
from jupyter_modelsave.core.generation.loop import live_greedy  # noqa: E402

from .. import architectures as arch  # noqa: E402

README = Path(__file__).parents[2] / "README.md"
STEPS = 8
PROMPT = torch.randint(1, arch.VOCAB, (2, 6), generator=torch.Generator().manual_seed(11))


def llama() -> tuple[torch.nn.Module, None]:
    """A Llama-like decoder with grouped-query attention (4 heads, 2 key/value heads)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=arch.VOCAB, hidden_size=arch.HIDDEN, intermediate_size=2 * arch.HIDDEN,
        num_hidden_layers=arch.LAYERS, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=arch.MAX_POSITIONS,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval(), None


BUILDERS = {"GPT-2": arch.gpt2, "Llama": llama, "T5": arch.t5}


def snapshot(model: torch.nn.Module) -> dict[str, Any]:
    """What must not change: flags, weights, configs, generation config, hooks."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "configs": [m.config.to_dict() for m in model.modules() if hasattr(m, "config")],
        "generation_config": model.generation_config.to_dict(),
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    }


@dataclass
class Export:
    name: str
    model: torch.nn.Module
    staged: Any
    path: Path
    before: dict[str, Any]


@pytest.fixture(scope="module", params=list(BUILDERS))
def exported(request, tmp_path_factory) -> Export:
    model, _ = BUILDERS[request.param]()
    if request.param == "GPT-2":
        model.train()  # staged from training mode: it must come back in it
    before = snapshot(model)
    staged = jms.stage(model, PROMPT, generation=True, name=request.param.lower())
    path = staged.write(tmp_path_factory.mktemp("exports"))
    return Export(request.param, model, staged, path, before)


def _dims(value: Any) -> list[Any]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_greedy_tokens_are_generates_for_8_steps_also_left_padded(exported):
    # Given a generation export of a tiny random-init model (staged on a 2 x 6 prompt)
    report = exported.staged.report
    # Then parity passed: every graph probe and both greedy runs
    assert report.passed, report.diagnosis
    assert report.steps == STEPS
    runs = {r.name: r for r in report.generation}
    assert list(runs) == ["prompt", "left-padded batch of 2"]
    for run in runs.values():
        # the artifact's greedy tokens are generate()'s, 8 per row, every step's logits compared
        assert run.artifact_tokens == run.live_tokens
        assert [len(row) for row in run.live_tokens] == [STEPS, STEPS]
        assert run.steps_compared == STEPS and run.first_difference is None
    # and the padded run really is a batch of 2 with a left-padded row
    assert runs["left-padded batch of 2"].prompt_lengths == [6, 4]
    step_probes = [p for p in report.probes if p.name.startswith("greedy: ")]
    assert [len(p.outputs) for p in step_probes] == [STEPS, STEPS]


def test_graph_names_and_axes_are_optimums(exported):
    import onnx

    plan = exported.staged.generation["plan"]
    layers = range(plan["num_layers"])
    decoder = onnx.load(str(graph_file(exported.path, "decoder")), load_external_data=False)
    inputs = {v.name: _dims(v) for v in decoder.graph.input}
    outputs = {v.name: _dims(v) for v in decoder.graph.output}
    if exported.name == "T5":
        past = [f"past_key_values.{i}.decoder.{kv}" for i in layers for kv in ("key", "value")]
        assert list(inputs) == ["input_ids", "encoder_attention_mask", "encoder_hidden_states",
                                *past]  # fmt: skip
        assert inputs["input_ids"] == ["batch_size", 1]
        assert inputs["encoder_hidden_states"][:2] == ["batch_size", "encoder_sequence_length"]
        axis = "past_decoder_sequence_length"
        encoder = onnx.load(str(graph_file(exported.path, "encoder")), load_external_data=False)
        assert [v.name for v in encoder.graph.input] == ["input_ids", "attention_mask"]
        assert [v.name for v in encoder.graph.output] == ["last_hidden_state"]
        assert _dims(encoder.graph.input[0]) == ["batch_size", "encoder_sequence_length"]
    else:
        past = [f"past_key_values.{i}.{kv}" for i in layers for kv in ("key", "value")]
        assert list(inputs) == ["input_ids", "attention_mask", "position_ids", *past]
        assert inputs["input_ids"] == inputs["position_ids"] == ["batch_size", "sequence_length"]
        assert inputs["attention_mask"] == ["batch_size", "total_sequence_length"]
        assert outputs["logits"] == ["batch_size", "sequence_length", arch.VOCAB]
        axis = "past_sequence_length"
    heads = 2 if exported.name == "Llama" else arch.HEADS  # Llama: grouped-query, 2 kv heads
    assert plan["kv_heads"] == heads
    for name in past:
        assert inputs[name] == ["batch_size", heads, axis, plan["head_dim"]]
    presents = [n.replace("past_key_values.", "present.") for n in past]
    assert list(outputs) == ["logits", *presents]
    assert all(axis in outputs[n][2] for n in presents)  # "past_... + sequence_length"


def _live_logits(exported: Export, ids: torch.Tensor, decoder_ids: torch.Tensor | None = None):
    model = copy.deepcopy(exported.model).eval()
    with torch.no_grad():
        if decoder_ids is None:
            return model(input_ids=ids, use_cache=False).logits.numpy()
        return model(input_ids=ids, decoder_input_ids=decoder_ids, use_cache=False).logits.numpy()


def test_an_empty_past_is_the_first_step_at_any_batch_and_length(exported):
    # Given the loaded artifact and a prompt of another batch size and length than the export's
    ids = torch.randint(1, arch.VOCAB, (3, 4), generator=torch.Generator().manual_seed(5))
    loaded = jms.load(exported.path)
    plan = exported.staged.generation["plan"]
    empty = (3, plan["kv_heads"], 0, plan["head_dim"])
    if exported.name == "T5":
        assert isinstance(loaded, Seq2SeqSessions)
        (states,) = loaded.encoder.run(None, {"input_ids": ids.numpy(),
                                              "attention_mask": np.ones((3, 4), np.int64)})  # fmt: skip
        start = np.zeros((3, 1), np.int64) + plan["decoder_start_token_id"]
        feeds = {"input_ids": start, "encoder_attention_mask": np.ones((3, 4), np.int64),
                 "encoder_hidden_states": states}  # fmt: skip
        session = loaded.decoder
    else:
        feeds = {"input_ids": ids.numpy(), "attention_mask": np.ones((3, 4), np.int64),
                 "position_ids": np.tile(np.arange(4), (3, 1))}  # fmt: skip
        session = loaded
    names = [o.name for o in session.get_outputs()]
    feeds |= {i.name: np.zeros(empty, np.float32) for i in session.get_inputs()
              if i.name.startswith("past_key_values.")}  # fmt: skip
    # When the graph runs with an empty past (the first step)
    first = dict(zip(names, session.run(None, feeds)))
    # Then its logits are the live model's full forward pass, and its present holds the new keys
    if exported.name == "T5":
        live = _live_logits(exported, ids, torch.from_numpy(start))
    else:
        live = _live_logits(exported, ids)
    np.testing.assert_allclose(first["logits"], live, atol=1e-4, rtol=1e-3)
    assert first[names[1]].shape[2] == feeds["input_ids"].shape[1]
    # and one more token through that past gives the live model's logits on the longer sequence
    token = first["logits"][:, -1].argmax(-1)[:, None]
    feeds |= {"input_ids": token}
    feeds |= {n.replace("present.", "past_key_values."): first[n] for n in names[1:]}
    if exported.name == "T5":
        live = _live_logits(exported, ids, torch.from_numpy(np.concatenate([start, token], 1)))
    else:
        feeds |= {"attention_mask": np.ones((3, 5), np.int64), "position_ids": np.full((3, 1), 4)}
        live = _live_logits(exported, torch.cat([ids, torch.from_numpy(token)], dim=1))
    second = dict(zip(names, session.run(None, feeds)))
    np.testing.assert_allclose(second["logits"][:, -1], live[:, -1], atol=1e-4, rtol=1e-3)


def test_the_seq2seq_artifact_is_one_folder_with_a_hash_per_file(exported, tmp_path):
    if exported.name != "T5":
        pytest.skip("the seq2seq layout")
    # Given T5's written generation export
    manifest = json.loads(Path(f"{exported.path}.json").read_text())
    # Then it is one folder holding the encoder and the decoder, one manifest with their hashes
    assert sorted(p.name for p in exported.path.iterdir()) == [
        "decoder_model.onnx", "encoder_model.onnx"]  # fmt: skip
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((exported.path / name).read_bytes()).hexdigest() == digest
    assert manifest["generation"]["family"] == "seq2seq"
    assert set(manifest["generation"]["graphs"]) == {"encoder", "decoder"}
    # and a changed decoder is refused on load
    copy_path = tmp_path / exported.path.name
    shutil.copytree(exported.path, copy_path)
    shutil.copy(f"{exported.path}.json", f"{copy_path}.json")
    assert isinstance(jms.load(copy_path), Seq2SeqSessions)
    with open(copy_path / "decoder_model.onnx", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(jms.IntegrityError, match="does not match its manifest"):
        jms.load(copy_path)
    # and as a base64 string the folder travels zipped and loads as the two sessions
    from jupyter_modelsave.core.transfer import encode

    assert isinstance(jms.from_base64(encode(exported.path, "onnx")), Seq2SeqSessions)


def test_with_external_data_each_seq2seq_graph_is_a_folder_of_its_own(tmp_path):
    # Given T5 staged for generation with its weights in external data files
    model, _ = arch.t5()
    staged = jms.stage(model, PROMPT, generation=True, external_data=True)
    # Then parity passed, and each graph is the usual ONNX folder layout under its own name
    assert staged.report.passed, staged.report.diagnosis
    path = staged.write(tmp_path)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == [
        "decoder_model.onnx/model.onnx", "decoder_model.onnx/model.onnx.data",
        "encoder_model.onnx/model.onnx", "encoder_model.onnx/model.onnx.data",
    ]  # fmt: skip
    assert isinstance(jms.load(path), Seq2SeqSessions)


def test_the_report_shows_both_token_sequences(exported):
    report = exported.staged.report
    html = report._repr_html_()
    data = json.loads(json.dumps(report.to_dict()))
    for run, saved in zip(report.generation, data["generation"]):
        assert saved["live_tokens"] == run.live_tokens
        assert saved["artifact_tokens"] == run.artifact_tokens
        for row in run.live_tokens:
            assert " ".join(map(str, row)) in html
    assert "live generate()" in html and "artifact" in html
    assert f"greedy {STEPS} steps: tokens identical in 2 of 2 runs" in report.summary()
    # and verify() checks again, loops included, without exporting again
    again = exported.staged.verify(atol=1e-3)
    assert again.passed and again.atol == 1e-3
    assert [r.live_tokens for r in again.generation] == [r.live_tokens for r in report.generation]


def test_the_live_model_is_left_as_it_was(exported):
    after = snapshot(exported.model)
    before = exported.before
    for key in ("training", "requires_grad", "configs", "generation_config", "hooks"):
        assert after[key] == before[key], key
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    if exported.name == "GPT-2":
        assert exported.model.training  # staged from training mode, back in it


def test_a_graph_that_drops_its_past_fails_the_greedy_check(monkeypatch, tmp_path):
    from jupyter_modelsave.core.generation import _cache

    # Given GPT-2 exported through a wrapper that hands the model an empty cache (the graph
    # takes past_key_values but ignores them): its own probes cannot tell, they run that wrapper
    model, _ = arch.gpt2()
    real = _cache.dynamic_cache
    monkeypatch.setattr(_cache, "dynamic_cache", lambda pairs: real([]))
    staged = jms.stage(model, PROMPT, generation=True)
    # Then the greedy loop against the live model's generate() fails it: the step logits (a
    # random tiny model may still repeat the same tokens), with a note per failed run
    report = staged.report
    assert not report.passed
    assert all(p.passed for p in report.probes if not p.name.startswith("greedy: "))
    failed_steps = [o.name for p in report.probes if p.name.startswith("greedy: ")
                    for o in p.outputs if not o.passed]  # fmt: skip
    assert failed_steps and all(n.startswith("logits, step ") for n in failed_steps)
    assert not any(r.passed for r in report.generation)
    assert sum("greedy run" in note for note in report.diagnosis) == 2
    # and it is not written without allow_mismatch
    with pytest.raises(jms.ParityError):
        staged.write(tmp_path)


BAD = [
    ("bert", {}, "cannot generate"),
    ("gpt2_base", {}, "cannot generate"),
    ("linear", {}, "is not one"),
    ("gpt2", {"format": "safetensors"}, "format='safetensors' cannot hold them"),
    ("gpt2", {"format": "torchscript"}, "format='torchscript' cannot hold them"),
    ("gpt2", {"generation": "yes"}, "generation must be True or False"),
    ("gpt2", {"dynamic_axes": {"input_ids": {0: "batch"}}}, "dynamic_axes cannot be set"),
    ("gpt2", {"input_names": ["ids"]}, "input_names cannot be set"),
    ("gpt2", {"generation_steps": 0}, "generation_steps must be an integer from 1"),
    ("gpt2", {"generation_steps": True}, "generation_steps must be an integer"),
    ("gpt2", {"generation_steps": 2.5}, "generation_steps must be an integer"),
    ("gpt2", {"max_shard_size": "1GB"}, "takes no option"),
    ("gpt2", {"metadata": {"generation": 1}}, "reserved"),
    ("gpt2", {"example_inputs": torch.randn(2, 4)}, "must be token ids"),
    ("gpt2", {"example_inputs": torch.full((1, 3), arch.VOCAB)}, "outside the model's vocab"),
    ("gpt2", {"example_inputs": torch.full((1, 3), -1)}, "outside the model's vocab"),
    ("gpt2", {"example_inputs": torch.zeros(0, 3, dtype=torch.long)}, "at least one token"),
    ("gpt2", {"example_inputs": {"ids": PROMPT}}, "no 'input_ids'"),
    ("gpt2", {"example_inputs": (PROMPT, PROMPT, PROMPT)}, "A prompt tuple"),
    ("gpt2", {"example_inputs": (PROMPT, torch.ones(2, 5))}, "attention_mask must be a tensor"),
    ("gpt2", {"example_inputs": (PROMPT, torch.zeros(2, 6))}, "at least one token per row"),
    ("gpt2", {"example_inputs": (PROMPT, torch.full((2, 6), 2))}, "hold 0 (padding) and 1"),
    ("gpt2_bf16", {}, "keeps its cache in torch.bfloat16"),
]


@pytest.fixture(scope="module")
def bad_models() -> dict[str, torch.nn.Module]:
    gpt2, _ = arch.gpt2()
    bert, _ = arch.bert()
    return {"gpt2": gpt2, "gpt2_base": gpt2.transformer, "bert": bert,
            "linear": torch.nn.Linear(4, 4), "gpt2_bf16": copy.deepcopy(gpt2).bfloat16()}  # fmt: skip


@pytest.mark.parametrize(("model", "options", "message"), BAD,
                         ids=[f"{m}-{next(iter(o), '')}-{i}" for i, (m, o, _) in enumerate(BAD)])  # fmt: skip
def test_bad_input_is_refused_before_any_export(bad_models, monkeypatch, model, options, message):
    from jupyter_modelsave.core.generation import graphs

    def no_export(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the export started")

    monkeypatch.setattr(graphs, "export_graphs", no_export)
    options = {"generation": True, **options}
    with pytest.raises(jms.InvalidOptionError, match=re.escape(message)):
        jms.stage(bad_models[model], **options)


def test_find_models_says_which_models_can_generate(bad_models):
    # (find_models lists a model's submodules only when nothing holds them)
    listed = {i.name: i.can_generate for i in jms.find_models(bad_models)}
    assert listed == {"gpt2": True, "bert": False, "linear": False, "gpt2_bf16": True}
    [base] = jms.find_models({"gpt2_base": bad_models["gpt2_base"]})
    assert base.can_generate is False  # GPT2Model: no language-model head


def _readme_blocks() -> list[str]:
    section = README.read_text().split("## Generation\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return [b for b in blocks if "session.run" in b or "decoder.run" in b]


def test_the_readme_loops_generate_what_generate_does(monkeypatch, tmp_path):
    # Given the README's two loops, GPT-2 staged as its first block does, and T5
    gpt2, _ = arch.gpt2()
    t5, _ = arch.t5()
    monkeypatch.chdir(tmp_path)
    path = jms.stage(gpt2, PROMPT, generation=True).write("exports/")
    namespace = {"jms": jms, "path": path, "model": gpt2, "t5": t5}
    causal, seq2seq = _readme_blocks()
    # When they run as written
    exec(causal, namespace)
    exec(seq2seq, namespace)
    # Then their greedy tokens are the live models' generate() tokens, left padding included
    for model, tokens, ids, mask in (
        (gpt2, namespace["tokens"], [[31, 7, 64, 12, 5], [0, 0, 48, 9, 27]], None),
        (t5, namespace["t5_tokens"], namespace["source"].tolist(), namespace["source_mask"]),
    ):
        ids = torch.tensor(ids)
        mask = (
            torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]) if mask is None else torch.tensor(mask)
        )
        family = gen.generation_family(model)
        with torch.no_grad():
            plan = gen.make_plan(model, family, ids, mask)
        live = live_greedy(model, plan, ids, mask, STEPS)
        assert tokens.tolist() == live.tokens.tolist()
        assert tokens.shape == (2, STEPS)
