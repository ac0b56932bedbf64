"""LRP engine: agreement with Zennit, conservation, differentiable mode, model left untouched."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.lrp import Composite, Epsilon, Flat, Norm, ZBox, ZPlus, lrp, stage_relevance
from c2f_attacks.models import C2FVGG16, InducedC2F, Normalize, VGGConfig
from tests.conftest import float64

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient
from zennit.composites import (
    EpsilonAlpha2Beta1Flat,
    EpsilonPlusFlat,
    SpecialFirstLayerMapComposite,
)
from zennit.rules import Epsilon as ZEpsilon
from zennit.rules import ZBox as ZZBox
from zennit.rules import ZPlus as ZZPlus
from zennit.torchvision import VGGCanonizer
from zennit.types import Convolution
from zennit.types import Linear as ZLinear

HIER = Hierarchy.from_dict(
    {"round": ["circle", "ring"], "angular": ["square", "triangle", "cross"]}
)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).norm() / ref.norm()).item()


def zennit_relevance(model, x, target, composite, num_classes):
    with Gradient(model, composite) as attributor:
        _, rel = attributor(x, F.one_hot(target, num_classes).to(x.dtype))
    return rel


def randomize_bn(model: nn.Module, eps: float = 0.0) -> None:
    """Non-trivial running statistics. eps=0: Zennit's canonizer leaves each merged BatchNorm
    computing x / sqrt(1 + eps) (it resets the statistics but not eps), so only with eps=0 is
    Zennit's canonized model the same function as the original one."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.eps = eps


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def vgg16_bn():
    torch.manual_seed(0)
    model = torchvision.models.vgg16_bn(weights=None).eval()
    with torch.no_grad():
        randomize_bn(model)
    return model


# -- agreement with Zennit ---------------------------------------------------------------------
# Float32 on random VGG-16s: rel_err measured 1e-7 to 3e-6 under AVX-512, AVX2 and torch's
# reference kernels at 1 and 2 threads, 30x below the bound.


@pytest.mark.parametrize("size,target", [(32, [0, 999]), (64, [3, 417])])
def test_epsilon_plus_flat_matches_zennit_vgg16(vgg16, size, target):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    t = torch.tensor(target)
    ours = lrp(vgg16, x, t)
    ref = zennit_relevance(vgg16, x, t, EpsilonPlusFlat(), 1000)
    assert ours.shape == x.shape
    assert rel_err(ours, ref) <= 1e-4


@pytest.mark.parametrize("size,target", [(32, [5, 5]), (64, [12, 700])])
def test_epsilon_plus_flat_matches_zennit_vgg16_bn(vgg16_bn, size, target):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size + 1))
    t = torch.tensor(target)
    before = {k: v.clone() for k, v in vgg16_bn.state_dict().items()}
    ours = lrp(vgg16_bn, x, t)
    # our canonization computes merged weights on the fly: the model itself is untouched
    assert all(torch.equal(before[k], v) for k, v in vgg16_bn.state_dict().items())
    ref = zennit_relevance(vgg16_bn, x, t, EpsilonPlusFlat(canonizers=[VGGCanonizer()]), 1000)
    assert rel_err(ours, ref) <= 1e-4


def test_alpha_beta_and_box_match_zennit(vgg16):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([1, 2])
    ours = lrp(vgg16, x, t, composite="epsilon_alpha2_beta1_flat")
    ref = zennit_relevance(vgg16, x, t, EpsilonAlpha2Beta1Flat(), 1000)
    assert rel_err(ours, ref) <= 1e-4
    ours = lrp(vgg16, x, t, composite="epsilon_plus_box")
    box = SpecialFirstLayerMapComposite(
        layer_map=[(Convolution, ZZPlus()), (nn.Linear, ZEpsilon())],
        first_map=[(ZLinear, ZZBox(0.0, 1.0))],
    )
    ref = zennit_relevance(vgg16, x, t, box, 1000)
    assert rel_err(ours, ref) <= 1e-4


class SignedNet(nn.Sequential):
    """Convolutions fed signed inputs (no ReLU before them), an un-merged BatchNorm, a
    LeakyReLU and average pooling: the general z+/alpha-beta paths and the pass-through rule."""

    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 6, 3, padding=1), nn.LeakyReLU(0.1), nn.BatchNorm2d(6), nn.Conv2d(6, 6, 3),
            nn.Conv2d(6, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * 3 * 3, 5),
        )  # fmt: skip


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat"])
def test_signed_inputs_batchnorm_pass_match_zennit(name):
    torch.manual_seed(4)
    net = SignedNet().double().eval()
    with torch.no_grad():
        # not merged (it follows an activation): pass-through in both. After a LeakyReLU its
        # inputs are non-zero (see rules.Pass for exact zeros).
        randomize_bn(net, eps=1e-5)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 2, 4])
    ref_comp = EpsilonPlusFlat() if name == "epsilon_plus_flat" else EpsilonAlpha2Beta1Flat()
    ref = zennit_relevance(net, x, t, ref_comp, 5)
    assert rel_err(lrp(net, x, t, composite=name), ref) <= 1e-6


@pytest.mark.parametrize(
    "activation",
    [nn.Tanh(), nn.Sigmoid(), nn.ELU(inplace=True), nn.LeakyReLU(0.1, inplace=True)],
    ids=["tanh", "sigmoid", "elu-inplace", "leaky-relu-inplace"],
)
def test_activations_that_save_or_overwrite_their_output_match_zennit(activation):
    """Their backward nodes keep the output tensor, so the explanation must not reuse it."""
    torch.manual_seed(6)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), activation, nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True), nn.Flatten(),
        nn.Linear(64, 3),
    ).double().eval()  # fmt: skip
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 2])
    ref = zennit_relevance(net, x, t, EpsilonPlusFlat(), 3)
    assert rel_err(lrp(net, x, t), ref) <= 1e-9


def _c2f(shared: bool, bn: bool, seed: int = 0) -> C2FVGG16:
    torch.manual_seed(seed)
    cfg = VGGConfig(
        width=0.125, input_size=32, batch_norm=bn, head_width=32, shared_backbone=shared
    )
    model = C2FVGG16(HIER, cfg).eval()
    with torch.no_grad():
        randomize_bn(model)
    return model


def _stage_net(model: C2FVGG16, stage: str, c: int) -> nn.Module:
    """The flat network computing the explained logits from normalized images."""
    if model.cfg.shared_backbone:
        head = model.coarse_head if stage == "coarse" else model.fine_heads[c]
        return nn.Sequential(model.trunk, head)
    return model.coarse_net if stage == "coarse" else model.fine_nets[c]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_plus_box"])
def test_stage_relevance_matches_zennit_on_the_stage_network(shared, bn, composite):
    model = _c2f(shared, bn)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = model(x)
    canon = [VGGCanonizer()] if bn else None
    mean, std = model.normalize.mean, model.normalize.std
    if composite == "epsilon_plus_flat":
        zc = EpsilonPlusFlat(canonizers=canon)
    else:
        zc = SpecialFirstLayerMapComposite(
            layer_map=[(Convolution, ZZPlus()), (nn.Linear, ZEpsilon())],
            first_map=[(ZLinear, ZZBox((0 - mean) / std, (1 - mean) / std))],
            canonizers=canon,
        )
    for stage in ("coarse", "fine"):
        ours = stage_relevance(model, x, stage, composite=composite)
        for c in out.coarse_pred.unique().tolist():
            idx = (out.coarse_pred == c).nonzero()[:, 0]  # images whose stage network is c's
            net = _stage_net(model, stage, c)
            if stage == "coarse":
                t, k = out.coarse_pred[idx], HIER.num_coarse
            else:
                offset = int(model.group_mask[c].nonzero()[0])
                t, k = out.fine_pred[idx] - offset, int(model.group_mask[c].sum())
            # relevance of a normalized pixel is the relevance of the pixel
            ref = zennit_relevance(net, model.normalize(x[idx]), t, zc, k)
            assert rel_err(ours[idx], ref) <= 1e-4, (stage, c)


def test_target_none_is_the_models_prediction():
    model = _c2f(True, False)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    out = model(x)
    for stage, pred in (("coarse", out.coarse_pred), ("fine", out.fine_pred)):
        r, o = stage_relevance(model, x, stage, return_output=True)
        torch.testing.assert_close(r, stage_relevance(model, x, stage, pred))
        assert torch.equal(o.coarse_pred, out.coarse_pred) and torch.equal(
            o.fine_pred, out.fine_pred
        )
        torch.testing.assert_close(o.fine_logits, out.fine_logits)


def test_batched_equals_one_by_one():
    """Each image's relevance ignores the rest of the batch (here: separate stage networks,
    images routed to the fine network of their own coarse class). Float64, with a tolerance
    scaled to the map: float32 convolutions may sum in another order in a batch of 1, and
    relative error at pixels of small relevance then depends on the CPU's kernels."""
    model, x = float64(
        _c2f(False, True), torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    )
    batched = stage_relevance(model, x, "fine")
    single = torch.cat([stage_relevance(model, x[i : i + 1], "fine") for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12 * batched.abs().max().item())


class SmallNet(nn.Sequential):
    def __init__(self, bias: bool = True, classes: int = 4):
        super().__init__(
            nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(32, 16, bias=bias), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(16, classes, bias=bias),
        )  # fmt: skip


def test_induced_c2f_stages():
    """Float64: the two sides sum in different orders, and a float32 pixel of small relevance
    would be compared at its own rounding."""
    torch.manual_seed(0)
    flat = SmallNet(classes=5).double().eval()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = InducedC2F(flat, HIER, mean=mean, std=std).double()
    wrapped = nn.Sequential(Normalize(mean, std), flat).double()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = model(x)
    torch.testing.assert_close(
        stage_relevance(model, x, "fine"), lrp(wrapped, x, out.fine_pred), rtol=1e-9, atol=1e-12
    )
    # coarse: the unit relevance is split over the group's members by softmax share, and LRP is
    # linear in the output relevance
    coarse = stage_relevance(model, x, "coarse")
    share = out.fine_logits.masked_fill(~model.group_mask[out.coarse_pred], float("-inf")).softmax(
        1
    )
    expected = sum(share[:, j, None, None, None] * lrp(wrapped, x, j) for j in range(5))
    torch.testing.assert_close(coarse, expected, rtol=1e-9, atol=1e-12)


# -- conservation ------------------------------------------------------------------------------


def test_conservation_epsilon_zero_bias():
    torch.manual_seed(0)
    net = SmallNet(bias=False).double().eval()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3])
    lrp0 = Composite(
        [((nn.Conv2d, nn.Linear), Epsilon(1e-12)), ((nn.AdaptiveAvgPool2d,), Norm(1e-12))]
    )
    r = lrp(net, x, t, composite=lrp0)
    torch.testing.assert_close(r.sum((1, 2, 3)), torch.ones(4, dtype=torch.float64))
    # starting at the logit: the input relevance sums to the logit
    r, logits = lrp(net, x, t, composite=lrp0, init="logit", return_output=True)
    torch.testing.assert_close(r.sum((1, 2, 3)), logits.gather(1, t[:, None])[:, 0])


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_plus_box"])
def test_conservation_plus_composites_zero_bias(composite):
    torch.manual_seed(1)
    net = SmallNet(bias=False).double().eval()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    r = lrp(net, x, torch.tensor([3, 2, 1, 0]), composite=composite)
    torch.testing.assert_close(
        r.sum((1, 2, 3)), torch.ones(4, dtype=torch.float64), rtol=1e-4, atol=1e-4
    )


def test_conservation_per_layer():
    """Relevance at every layer's input (explaining the sub-network above it) sums to 1."""
    torch.manual_seed(2)
    net = SmallNet(bias=False).double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([1, 2])
    lrp0 = Composite(
        [((nn.Conv2d, nn.Linear), Epsilon(1e-12)), ((nn.AdaptiveAvgPool2d,), Norm(1e-12))]
    )
    acts = [x]
    for layer in list(net)[:-1]:
        acts.append(layer(acts[-1].clone()))
    for i, a in enumerate(acts):
        if a.dim() != 4 or not (a >= 0).all():
            continue
        sub = nn.Sequential(*list(net)[i:])
        r = lrp(sub, a, t, composite=lrp0, check_range=False)
        torch.testing.assert_close(r.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64))


# -- differentiable mode -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "composite", ["epsilon_plus_flat", "epsilon_plus_box", "epsilon_alpha2_beta1_flat", "epsilon"]
)
def test_gradcheck_differentiable_mode(composite):
    torch.manual_seed(3)
    net = nn.Sequential(Normalize((0.4, 0.5, 0.6), (0.3, 0.2, 0.25)), SmallNet()).double().eval()
    x = (torch.rand(2, 3, 4, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    weights = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    # fast_mode: checks random directional derivatives, cheap enough for CPU CI

    def f(inp):
        r = lrp(
            net,
            inp,
            torch.tensor([1, 3]),
            composite=composite,
            create_graph=True,
            check_range=False,
        )
        return (r * weights).sum() + (r**2).sum()

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize(
    "composite", ["epsilon_plus_flat", "epsilon_plus_box", "epsilon_alpha2_beta1_flat", "epsilon"]
)
@pytest.mark.parametrize("net_type", [SmallNet, SignedNet])
def test_plain_pass_equals_differentiable_pass(composite, net_type):
    """The plain explanation reuses memory (no output copy, ratios overwritten in place); the
    differentiable one copies. Both must give the same relevance, in-place ReLUs, shared
    denominators (signed z+ / alpha-beta) and box sources included."""
    torch.manual_seed(5)
    net = net_type().double().eval()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0, 3, 1])
    plain, out = lrp(net, x, t, composite=composite, return_output=True)
    xg = x.clone().requires_grad_()
    diff, out_diff = lrp(net, xg, t, composite=composite, create_graph=True, return_output=True)
    torch.testing.assert_close(plain, diff.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out, out_diff.detach(), rtol=0, atol=0)
    torch.testing.assert_close(out, net(x), rtol=0, atol=0)


def test_directional_derivative_c2f():
    model = _c2f(False, True).double()
    x0 = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    x0 = x0 * 0.8 + 0.1
    v = torch.randn_like(x0)
    t = model(x0).coarse_pred

    def loss(x, create_graph=False):
        r = stage_relevance(model, x, "coarse", t, create_graph=create_graph, check_range=False)
        return (r[:, :, 8:24, 8:24] ** 2).sum()

    x = x0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(x, True), x)
    h = 1e-6
    fd = (loss(x0 + h * v) - loss(x0 - h * v)) / (2 * h)
    torch.testing.assert_close((g * v).sum(), fd, rtol=1e-4, atol=1e-10)


def test_output_of_the_same_pass_has_true_gradients():
    model = _c2f(True, True).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    xg = x.clone().requires_grad_()
    r, out = stage_relevance(model, xg, "fine", create_graph=True, return_output=True)
    margin = out.fine_logits.gather(1, out.fine_pred[:, None]).sum()
    (g_ours,) = torch.autograd.grad(margin + 0 * r.sum(), xg)
    xr = x.clone().requires_grad_()
    ref = model(xr)
    (g_ref,) = torch.autograd.grad(ref.fine_logits.gather(1, ref.fine_pred[:, None]).sum(), xr)
    torch.testing.assert_close(g_ours, g_ref)


# -- the model is left as it was -----------------------------------------------------------------


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
    )


def _no_hooks(model):
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def test_model_untouched_and_x_untouched():
    model = _c2f(True, True)
    model.trunk[0][0].weight.requires_grad_(False)  # a user's frozen layer stays frozen
    state, flags = _snapshot(model)
    x = torch.rand(2, 3, 32, 32)
    for composite in ("epsilon_plus_flat", "epsilon_plus_box", "epsilon_alpha2_beta1_flat"):
        stage_relevance(model, x, "fine", composite=composite)
    xg = x.clone().requires_grad_()
    r = stage_relevance(model, xg, "coarse", create_graph=True)
    torch.autograd.grad(r.sum(), xg)
    assert x.grad is None and xg.grad is None
    assert _no_hooks(model)
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_hooks_removed_after_error():
    class Bad(SmallNet):
        def forward(self, x):
            super().forward(x)
            raise RuntimeError("boom")

    net = Bad().eval()
    with pytest.raises(RuntimeError, match="boom"):
        lrp(net, torch.rand(1, 3, 8, 8), 0)
    assert _no_hooks(net)


# -- validation ------------------------------------------------------------------------------------


def test_validation_errors():
    model = _c2f(True, False)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="stage"):
        stage_relevance(model, x, "middle")
    with pytest.raises(TypeError, match="C2FClassifier"):
        stage_relevance(SmallNet(), x, "coarse")
    with pytest.raises(TypeError, match="stage_relevance"):
        lrp(model, x, 0)
    with pytest.raises(ValueError, match="target"):
        stage_relevance(model, x, "coarse", torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="target"):
        stage_relevance(model, x, "coarse", torch.tensor([0, 2]))  # only 2 coarse classes
    with pytest.raises(TypeError, match="target"):
        stage_relevance(model, x, "fine", torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stage_relevance(model, x * 3, "coarse")
    with pytest.raises(ValueError, match="32x32"):
        stage_relevance(model, torch.rand(2, 3, 64, 64), "coarse")
    with pytest.raises(ValueError, match="unknown composite"):
        stage_relevance(model, x, "coarse", composite="nope")
    with pytest.raises(ValueError, match="init"):
        stage_relevance(model, x, "coarse", init="zero")
    with pytest.raises(ValueError, match="first_map"):
        Composite([((nn.Conv2d,), Flat())])


def test_custom_composite_flat_box_rules():
    comp = Composite([((nn.Conv2d,), ZPlus()), ((nn.Linear,), Epsilon())], [((nn.Conv2d,), ZBox())])
    net = SmallNet().eval()
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(lrp(net, x, 1, composite=comp), lrp(net, x, 1, "epsilon_plus_box"))


# -- heatmaps --------------------------------------------------------------------------------------


def test_heatmap_and_plot(tmp_path):
    from c2f_attacks.viz import heatmap, plot_explanation

    r = torch.randn(3, 16, 16)
    rgb = heatmap(r)
    assert rgb.shape == (16, 16, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert heatmap(torch.zeros(16, 16)).shape == (16, 16, 3)  # all-zero relevance is fine
    with pytest.raises(ValueError):
        heatmap(torch.zeros(2, 3, 16, 16))

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    plot_explanation(axes[:2], torch.rand(3, 16, 16), r, "coarse")
    plot_explanation(axes[2], torch.rand(3, 16, 16), r, "overlay", overlay=True)
    fig.savefig(tmp_path / "h.png")
    plt.close(fig)
    assert (tmp_path / "h.png").stat().st_size > 0
