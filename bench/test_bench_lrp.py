"""LRP engine cost, measured in one run (random weights).

* ``lrp_over_forward_backward``: one explanation / one forward + input-gradient backward
  (goal <= 1.5: the gradient-times-input form costs about one extra convolution per z+ layer).
* ``zennit_over_ours``: Zennit's ``EpsilonPlusFlat`` + ``Gradient`` / ours (goal >= 2).

VGG-16: full size (``--benchmark``) 64x64 images, batch 32. ResNet-18 (BatchNorm folded in data
flow, residual sums; Zennit with its ``ResNetCanonizer``): full size 224x224, batch 8. Smoke
size: 32x32, batch 2, one repeat.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.nn import functional as F

from bench.conftest import interleaved_medians
from c2f_attacks.lrp import lrp

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer


def _measure(model, size, batch, repeats, canonizers, benchmark):
    """(t_fb, t_ours, t_zennit) medians, timed interleaved; checks ours equals Zennit."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = torch.arange(batch) % 1000
    seed = F.one_hot(target, 1000).float()

    def forward_backward():
        xg = x.detach().requires_grad_()
        out = model(xg)
        return torch.autograd.grad(out.gather(1, target[:, None]).sum(), xg)[0]

    def ours():
        return lrp(model, x, target, check_range=False)

    composite = EpsilonPlusFlat(canonizers=canonizers)

    def zennit_lrp():
        with Gradient(model, composite) as attributor:
            return attributor(x, seed)[1]

    # Interleaved, so that load from other processes on a shared machine hits all three alike.
    times = interleaved_medians([forward_backward, ours, zennit_lrp], repeats)
    benchmark.pedantic(ours, rounds=1, iterations=1)
    # same explanation as Zennit (the accuracy tests live in tests/test_lrp*.py); float32, and
    # Zennit's merged BatchNorms keep a factor 1 / sqrt(1 + eps) each
    ref = zennit_lrp()
    assert ((ours() - ref).norm() / ref.norm()).item() <= 1e-3
    return times


def _report(name, size, batch, times, record_ratio, full_size, suffix=""):
    t_fb, t_ours, t_zennit = times
    ratio_fb, ratio_zennit = t_ours / t_fb, t_zennit / t_ours
    details = {"size": size, "batch": batch, "t_ours_s": t_ours, "t_fb_s": t_fb,
               "t_zennit_s": t_zennit}  # fmt: skip
    record_ratio(f"lrp_over_forward_backward{suffix}", ratio_fb, goal="<= 1.5", device="cpu",
                 **details)  # fmt: skip
    record_ratio(f"zennit_over_ours{suffix}", ratio_zennit, goal=">= 2", device="cpu", **details)
    print(
        f"\n{name} {size}x{size} batch {batch}: forward+backward {t_fb:.3f}s, ours {t_ours:.3f}s, "
        f"Zennit {t_zennit:.3f}s -> ours/(fwd+bwd) = {ratio_fb:.2f}, "
        f"Zennit/ours = {ratio_zennit:.2f}"
    )
    if full_size:  # loose guards: timings on shared machines vary
        assert ratio_fb < 3.0 and ratio_zennit > 1.0


def test_bench_lrp_vgg16(full_size, record_ratio, benchmark):
    size, batch, repeats = (64, 32, 5) if full_size else (32, 2, 1)
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    times = _measure(model, size, batch, repeats, None, benchmark)
    _report("VGG-16", size, batch, times, record_ratio, full_size)


def test_bench_lrp_resnet18(full_size, record_ratio, benchmark):
    size, batch, repeats = (224, 8, 5) if full_size else (32, 2, 1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    times = _measure(model, size, batch, repeats, [ResNetCanonizer()], benchmark)
    _report("ResNet-18", size, batch, times, record_ratio, full_size, suffix="_resnet18")
