"""Figure: the cost of the call recorder (``jms.start_recording``) on a model's forward pass.

Once a surface is loaded (``%load_ext``, the sidebar, ``jms.widget()``), torch's global module
hooks run for every module call and the outermost call's inputs are kept. This measures one
forward pass on the CPU with and without the recorder, alternating the two, medians of many
rounds, for a ResNet-style CNN (224 x 224 images) and a BERT-base-sized transformer encoder
(sequence 128), and for the small models of the other benchmarks (whose forward passes are a
few milliseconds, so a fixed per-module-call cost weighs more). Target: <= 1.02 (2 %).

The machine the figures are taken on is shared by several processes, so the time measured is the
CPU time of the calling thread (``time.thread_time``) with torch on one thread: what the recorder
adds to the work of a forward pass, unaffected by what other processes do in the meantime.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from _common import cnn, transformer
from torch import nn

from jupyter_modelsave.core import discovery

ROUNDS = int(os.environ.get("JMS_BENCH_ROUNDS", "15"))


def block(channels: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels // stride, channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
    )  # fmt: skip


def resnet_like() -> nn.Module:
    """ResNet-18's layout of convolutions (no residual adds): 224 x 224 in, 1000 classes out."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    for channels in (64, 128, 256, 512):
        layers += [block(channels, 1 if channels == 64 else 2), block(channels, 1)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers).eval()


def bert_like() -> nn.Module:
    """A BERT-base-sized encoder: 12 layers, width 768, 12 heads."""
    layer = nn.TransformerEncoderLayer(768, 12, 3072, batch_first=True)
    return nn.TransformerEncoder(layer, 12, enable_nested_tensor=False).eval()


CASES = {
    "cnn resnet-18 layout, 1x3x224x224": (resnet_like, lambda: torch.randn(1, 3, 224, 224)),
    "transformer bert-base size, 1x128": (bert_like, lambda: torch.randn(1, 128, 768)),
    "small cnn (other benches), 2x3x32x32": (cnn, lambda: torch.randn(2, 3, 32, 32)),
    "small transformer (other benches), 2x16": (
        transformer,
        lambda: torch.randint(0, 1000, (2, 16)),
    ),
}


def forward_times(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Median forward time without and with the recorder, alternated round by round (the
    recorder is switched outside the timed call)."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for round_ in range(ROUNDS + 3):  # the first 3 rounds warm both up
            for recording, out in ((False, times[0]), (True, times[1])):
                (discovery.start_recording if recording else discovery.stop_recording)()
                start = time.thread_time()
                model(x)
                if round_ >= 3:
                    out.append(time.thread_time() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def per_call_cost() -> float:
    """What the recorder adds to one module call, in µs: a chain of 100 ``nn.Identity``."""
    chain, x = nn.Sequential(*[nn.Identity() for _ in range(100)]), torch.zeros(1)

    def calls() -> None:
        for _ in range(100):
            chain(x)

    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        for recording, out in ((False, times[0]), (True, times[1])):
            (discovery.start_recording if recording else discovery.stop_recording)()
            start = time.thread_time()
            calls()
            out.append(time.thread_time() - start)
    discovery.stop_recording()
    added = statistics.median(times[1]) - statistics.median(times[0])
    return added / (100 * 101) * 1e6


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the forward pass runs in this thread: thread_time sees all of it
    calls = {}
    worst = 0.0
    for name, (build, example) in CASES.items():
        model, x = build(), example()
        bare, ours = forward_times(model, x)
        ratio = ours / bare
        modules = sum(1 for _ in model.modules())
        calls[name] = modules
        if "other benches" not in name:
            worst = max(worst, ratio)
        print(f"{name}: {bare * 1e3:.2f} ms without, {ours * 1e3:.2f} ms with the recorder (CPU time) "
              f"({modules} module calls per forward): {ratio:.3f}")  # fmt: skip
        assert discovery.last_inputs(model) is not None
    discovery.stop_recording()
    print(
        f"per module call: {per_call_cost():.2f} µs added (torch's hook path + the recorder's two hooks)"
    )
    print(f"ratio {worst:.3f} (worst of the two full-size models; target <= 1.02)")


if __name__ == "__main__":
    main()
