"""The safetensors writer's CUDA path: pinned double buffers, the library's bytes, bounded memory.

Skipped where there is no CUDA device.
"""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import jupyter_modelsave as jms
from jupyter_modelsave.core.formats import _safetensors_writer as writer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _cuda_tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "w": torch.randn(300, 301, device="cuda"),
        "bf16": torch.randn(1001, device="cuda").bfloat16(),
        "half": torch.randn(17, device="cuda").half(),
        "int8": torch.randint(-100, 100, (33,), dtype=torch.int8, device="cuda"),
        "mask": torch.rand(5, device="cuda") > 0.5,
        "empty": torch.zeros(0, 3, device="cuda"),
        "scalar": torch.tensor(2.0, device="cuda"),
        "on_cpu": torch.arange(10),  # a file may mix CPU and CUDA tensors
    }


@pytest.mark.parametrize("chunk_bytes", [writer.CHUNK_BYTES, 4096])
def test_cuda_tensors_are_written_as_save_file_writes_them(tmp_path, chunk_bytes):
    tensors = _cuda_tensors()
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    written = writer.save_file(
        tensors, tmp_path / "jms.safetensors", {"format": "pt"}, chunk_bytes=chunk_bytes
    )
    ours = (tmp_path / "jms.safetensors").read_bytes()
    assert ours == (tmp_path / "lib.safetensors").read_bytes()
    assert written.sha256 == hashlib.sha256(ours).hexdigest()
    assert 0 < written.staging_bytes <= 2 * chunk_bytes


def test_staging_buffers_are_pinned_and_copies_run_on_a_side_stream(tmp_path, monkeypatch):
    made = []
    original = writer._CudaStaging.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(writer._CudaStaging, "__init__", spy)
    writer.save_file(_cuda_tensors(), Path(tmp_path / "a.safetensors"), chunk_bytes=1 << 16)
    (staging,) = made
    assert len(staging._buffers) == 2
    assert all(b.is_pinned() for b in staging._buffers)
    assert staging._stream != torch.cuda.current_stream()


def _peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM, the peak resident set size


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_host_memory_stays_bounded_for_a_large_cuda_state_dict(tmp_path):
    # Given 512 MiB of weights on the GPU
    tensors = {f"layer{i}": torch.randn(4096, 4096, device="cuda") for i in range(8)}
    torch.empty(1, pin_memory=True)  # CUDA host context set up before measuring
    try:
        _peak_rss_reset()
    except OSError:
        pytest.skip("no /proc/self/clear_refs on this kernel")
    before = _peak_rss()
    # When they are saved with 16 MiB chunks
    written = writer.save_file(tensors, tmp_path / "big.safetensors", chunk_bytes=16 * 2**20)
    # Then the peak host memory grew by the two buffers and some slack, far from 512 MiB
    grown = _peak_rss() - before
    assert grown < 2 * 16 * 2**20 + 96 * 2**20, grown
    assert written.size > 512 * 2**20


def test_a_cuda_model_staged_as_safetensors_round_trips(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)).cuda().half()
    staged = jms.stage(net, format="safetensors", max_shard_size=10_000)
    assert staged.report.passed, staged.report.diagnosis
    state = jms.load(staged.write(tmp_path))
    assert all(torch.equal(state[k], v.cpu()) for k, v in net.state_dict().items())
