"""LRP engine cost, measured in one run (random weights).

* ``lrp_over_forward_backward``: one explanation / one forward + input-gradient backward
  (goal <= 1.5: the gradient-times-input form costs about one extra convolution per z+ layer).
  Its records keep the ratio in each timed round (``ratio_per_round``), and VGG-16's keep
  ``z_plus_bound``, the least this ratio can be on the CPU measured: forward + backward + those
  extra convolutions alone, timed in the same rounds, over forward + backward.
* ``zennit_over_ours``: Zennit's ``EpsilonPlusFlat`` + ``Gradient`` / ours (goal >= 2), with
  its own ``ratio_per_round``.
* ``lrp_over_forward_backward_vit_b_16`` (the default composite) and ``lxt_over_ours_vit_b_16``:
  LXT's efficient mode (its CP-LRP map for torchvision's ViT, Zennit's epsilon on the linear
  layers) / ours with the same rules (goal >= 1).

VGG-16: full size (``--benchmark``) 64x64 images, batch 32. ResNet-18 (BatchNorm folded in data
flow, residual sums; Zennit with its ``ResNetCanonizer``) and ViT-B/16: full size 224x224,
batch 8. Smoke size: 32x32, batch 2, one repeat (the ViT: two narrow blocks).
"""

from __future__ import annotations

import copy
import statistics
import types
from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from bench.conftest import forward_backward, interleaved_medians, interleaved_rounds
from c2f_attacks.lrp import Composite, CPAttention, Epsilon, lrp

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer


def _z_plus_convolutions(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The convolutions that the z+ rule adds to a forward pass, as one call: every ``Conv2d``
    but the input layer's (the flat rule's), on the input it sees in the forward pass, with
    ``W+`` and ``b+``.

    An LRP pass in the gradient-times-input form runs these on top of a forward and backward
    pass, so ``(t_fb + t_z_plus) / t_fb`` is the least its ratio can be on this CPU: the z+
    rule's bound, measured rather than estimated from the kernels."""
    seen: list[tuple[nn.Conv2d, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((m, args[0].detach())))
             for m in model.modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    # inputs that require grad, as the pass's do, so that the same kernels run
    calls = [
        (m, a.requires_grad_(), m.weight.detach().clamp(min=0),
         None if m.bias is None else m.bias.detach().clamp(min=0))
        for m, a in seen[1:]
    ]  # fmt: skip

    def run():
        return [F.conv2d(a, w, b, m.stride, m.padding, m.dilation, m.groups)
                for m, a, w, b in calls]  # fmt: skip

    return run


def _measure(model, size, batch, repeats, canonizers, benchmark) -> dict[str, list[float]]:
    """Seconds per round of ``fb`` (forward + backward), ``ours``, ``zennit`` and, for a model
    without canonizers, ``z_plus`` (:func:`_z_plus_convolutions`; with merged BatchNorms the LRP
    pass's forward is not the model's, so they bound nothing), timed interleaved; checks ours
    equals Zennit."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = torch.arange(batch) % 1000
    seed = F.one_hot(target, 1000).float()

    def ours():
        return lrp(model, x, target, check_range=False)

    composite = EpsilonPlusFlat(canonizers=canonizers)

    def zennit_lrp():
        with Gradient(model, composite) as attributor:
            return attributor(x, seed)[1]

    # Interleaved, so that load from other processes on a shared machine hits them all alike.
    fns = {"fb": lambda: forward_backward(model, x, target), "ours": ours, "zennit": zennit_lrp}
    if canonizers is None:
        fns["z_plus"] = _z_plus_convolutions(model, x)
    rounds = dict(zip(fns, interleaved_rounds(list(fns.values()), repeats)))
    benchmark.pedantic(ours, rounds=1, iterations=1)
    # same explanation as Zennit (the accuracy tests live in tests/test_lrp*.py); float32, and
    # Zennit's merged BatchNorms keep a factor 1 / sqrt(1 + eps) each
    ref = zennit_lrp()
    assert ((ours() - ref).norm() / ref.norm()).item() <= 1e-3
    return rounds


def _per_round(rounds: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """A ratio in each timed round: its spread says how far apart two measurements of it may
    fall on this machine."""
    return [round(n / d, 3) for n, d in zip(rounds[numerator], rounds[denominator])]


def record_lrp_ratios(name, size, batch, rounds, record_ratio, suffix="") -> tuple[float, float]:
    """Record and print ``lrp_over_forward_backward{suffix}`` and ``zennit_over_ours{suffix}``
    from :func:`_measure`'s rounds; returns the two ratios.

    Both records keep the median seconds and their own ratio in each round; the first also the
    z+ bound when the rounds time it."""
    times = {k: statistics.median(ts) for k, ts in rounds.items()}
    common = {"size": size, "batch": batch, **{f"t_{k}_s": t for k, t in times.items()}}
    ratio_fb, ratio_zennit = times["ours"] / times["fb"], times["zennit"] / times["ours"]
    lrp_rounds = _per_round(rounds, "ours", "fb")
    bound = {}
    if "z_plus" in times:
        bound["z_plus_bound"] = round((times["fb"] + times["z_plus"]) / times["fb"], 4)
    record_ratio(f"lrp_over_forward_backward{suffix}", ratio_fb, goal="<= 1.5", device="cpu",
                 ratio_per_round=lrp_rounds, **bound, **common)  # fmt: skip
    record_ratio(f"zennit_over_ours{suffix}", ratio_zennit, goal=">= 2", device="cpu",
                 ratio_per_round=_per_round(rounds, "zennit", "ours"), **common)  # fmt: skip
    said = f" (z+ bound {bound['z_plus_bound']:.2f})" if bound else ""
    print(
        f"\n{name} {size}x{size} batch {batch}: forward+backward {times['fb']:.3f}s, ours "
        f"{times['ours']:.3f}s, Zennit {times['zennit']:.3f}s -> ours/(fwd+bwd) = "
        f"{ratio_fb:.2f} (rounds {min(lrp_rounds):.2f}-{max(lrp_rounds):.2f}){said}, "
        f"Zennit/ours = {ratio_zennit:.2f}"
    )
    return ratio_fb, ratio_zennit


def test_each_lrp_record_keeps_its_own_ratios():
    recorded = {}

    def record_ratio(name, value, goal, device, **details):
        recorded[name] = {"value": value, **details}

    rounds = {"fb": [1.0, 2.0, 1.0], "ours": [1.5, 2.8, 1.6], "zennit": [3.0, 5.6, 4.0],
              "z_plus": [0.3, 0.7, 0.4]}  # fmt: skip
    record_lrp_ratios("model", 32, 2, rounds, record_ratio, suffix="_x")
    lrp_record = recorded["lrp_over_forward_backward_x"]
    zennit_record = recorded["zennit_over_ours_x"]
    assert lrp_record["value"] == 1.6 and lrp_record["ratio_per_round"] == [1.5, 1.4, 1.6]
    assert lrp_record["z_plus_bound"] == 1.4
    assert zennit_record["value"] == 4.0 / 1.6
    assert zennit_record["ratio_per_round"] == [2.0, 2.0, 2.5]
    assert "z_plus_bound" not in zennit_record  # it bounds the LRP ratio, not this one
    assert lrp_record["t_zennit_s"] == zennit_record["t_zennit_s"] == 4.0


def _report(name, size, batch, rounds, record_ratio, full_size, suffix=""):
    ratio_fb, ratio_zennit = record_lrp_ratios(name, size, batch, rounds, record_ratio, suffix)
    if full_size:  # loose guards: timings on shared machines vary
        assert ratio_fb < 3.0 and ratio_zennit > 1.0


def test_bench_lrp_vgg16(full_size, record_ratio, benchmark):
    size, batch, repeats = (64, 32, 5) if full_size else (32, 2, 1)
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    rounds = _measure(model, size, batch, repeats, None, benchmark)
    _report("VGG-16", size, batch, rounds, record_ratio, full_size)


def test_bench_lrp_resnet18(full_size, record_ratio, benchmark):
    size, batch, repeats = (224, 8, 5) if full_size else (32, 2, 1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    rounds = _measure(model, size, batch, repeats, [ResNetCanonizer()], benchmark)
    _report("ResNet-18", size, batch, rounds, record_ratio, full_size, suffix="_resnet18")


# -- ViT-B/16 against LXT ----------------------------------------------------------------------


def _lxt_explainer(model: nn.Module):
    """LXT's efficient mode for torchvision's ViT on this model's modules alone: the functions
    its ``monkey_patch`` puts on the classes (GELU, LayerNorm, MultiheadAttention) bound to the
    model's instances, and Zennit's epsilon rule with LXT's hook methods in a subclass, so that
    nothing outside the model changes (the tests run LXT's class patches in a subprocess)."""
    from lxt.efficient import patches, zennit_patches
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon as ZennitEpsilon

    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.forward = types.MethodType(patches.layer_norm_forward, m)
        elif isinstance(m, (nn.GELU, nn.MultiheadAttention)):
            m.original_forward = m.forward
            fn = patches.non_linear_forward if isinstance(m, nn.GELU) else (
                patches.cp_multi_head_attention_forward
            )  # fmt: skip
            m.forward = types.MethodType(fn, m)

    class LXTEpsilon(ZennitEpsilon):
        forward, backward = zennit_patches.forward, zennit_patches.backward

    composite = LayerMapComposite([(nn.Conv2d, LXTEpsilon(1e-6)), (nn.Linear, LXTEpsilon(1e-6))])

    def explain(x: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_()
        with composite.context(model):
            model(x).backward(seed)
        return (x * x.grad).detach()

    return explain


def test_bench_lrp_vit_b_16(full_size, record_ratio, benchmark):
    pytest.importorskip("lxt", reason="LXT comes with the test extra (pip install -e .[test])")
    size, batch, repeats = (224, 8, 5) if full_size else (32, 2, 1)
    torch.manual_seed(0)
    if full_size:
        model = torchvision.models.vit_b_16(weights=None)
    else:  # the same classes, two small blocks
        model = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64)
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.02)  # torchvision starts it at 0: no relevance
    model.eval()
    lxt = _lxt_explainer(copy.deepcopy(model))
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = torch.arange(batch) % 1000
    seed = F.one_hot(target, 1000).float()
    # LXT's rules exactly: epsilon on every linear layer, the attention's functional
    # projections on the plain gradient
    as_lxt = Composite([
        ((nn.Conv2d, nn.Linear), Epsilon(1e-6)),
        ((nn.MultiheadAttention,), CPAttention(projections=Epsilon(0.0))),
    ])  # fmt: skip

    def ours():
        return lrp(model, x, target, check_range=False)

    def ours_as_lxt():
        return lrp(model, x, target, composite=as_lxt, init="logit", check_range=False)

    def lxt_lrp():
        return lxt(x, seed)

    fb = lambda: forward_backward(model, x, target)  # noqa: E731
    times = interleaved_medians([fb, ours, ours_as_lxt, lxt_lrp], repeats)
    benchmark.pedantic(ours, rounds=1, iterations=1)
    # the same explanation as LXT (float32; the accuracy tests run float64)
    ref = lxt_lrp()
    assert ((ours_as_lxt() - ref).norm() / ref.norm()).item() <= 1e-3
    t_fb, t_ours, t_as_lxt, t_lxt = times
    ratio_fb, ratio_lxt = t_ours / t_fb, t_lxt / t_as_lxt
    details = {"size": size, "batch": batch, "t_ours_s": t_ours, "t_fb_s": t_fb,
               "t_ours_as_lxt_s": t_as_lxt, "t_lxt_s": t_lxt}  # fmt: skip
    record_ratio("lrp_over_forward_backward_vit_b_16", ratio_fb, goal="<= 1.5", device="cpu",
                 **details)  # fmt: skip
    record_ratio("lxt_over_ours_vit_b_16", ratio_lxt, goal=">= 1", device="cpu", **details)
    print(
        f"\nViT-B/16 {size}x{size} batch {batch}: forward+backward {t_fb:.3f}s, ours {t_ours:.3f}s "
        f"(LXT's rules {t_as_lxt:.3f}s), LXT {t_lxt:.3f}s -> ours/(fwd+bwd) = {ratio_fb:.2f}, "
        f"LXT/ours = {ratio_lxt:.2f}"
    )
    if full_size:  # loose guards: timings on shared machines vary
        assert ratio_fb < 3.0 and ratio_lxt > 0.5
