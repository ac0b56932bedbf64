"""LRP on models as users build them: the model check, train-mode models, BatchNorm folding and
the input rule found in data flow, grayscale inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.lrp import (
    Composite,
    Epsilon,
    Pass,
    ZPlus,
    check_explainable,
    lrp,
    stage_relevance,
)
from c2f_attacks.models import C2FVGG16, InducedC2F, Normalize, VGGConfig

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat

HIER = Hierarchy.from_dict({"round": ["circle", "ring"], "angular": ["square", "triangle"]})
MEAN, STD = (0.4, 0.5, 0.6), (0.3, 0.2, 0.25)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).norm() / ref.norm()).item()


def zennit_relevance(model, x, target, num_classes, composite=None):
    with Gradient(model, composite or EpsilonPlusFlat()) as attributor:
        _, rel = attributor(x, F.one_hot(target, num_classes).to(x.dtype))
    return rel


def images(n=2, channels=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, dtype=torch.float64, generator=g)


def body(in_channels=3, classes=4):
    """ReLU network without BatchNorm (its rules need no canonizer on Zennit's side)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes),
    )  # fmt: skip


# -- the model check ---------------------------------------------------------------------------


class WithGroupNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean((2, 3))))


def test_unsupported_layers_refused_by_name_before_running():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(UserError, match=r"'norm' \(torch\.nn\.modules\.normalization\.GroupNorm"):
        lrp(WithGroupNorm(), x, 0)
    hard = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardsigmoid(), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(UserError, match=r"'1' \(.*Hardsigmoid\).*Composite"):
        lrp(hard, x, 0)
    stats = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False),
                          nn.Flatten(), nn.Linear(144, 2))  # fmt: skip
    with pytest.raises(UserError, match="running statistics"):
        lrp(stats, x, 0)


def test_transformed_weights_refused():
    """A conv whose forward transforms its weight (weight standardization) is no plain linear
    map for the rules; padding-only subclasses (timm's Conv2dSame) are fine."""
    timm = pytest.importorskip("timm")
    std = nn.Sequential(timm.layers.StdConv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(UserError, match="StdConv2d.forward"):
        check_explainable(std)
    check_explainable(nn.Sequential(timm.layers.Conv2dSame(3, 4, 3, stride=2)))


def test_stage_relevance_runs_the_check():
    flat = WithGroupNorm()
    model = InducedC2F(nn.Sequential(flat, nn.Linear(2, 4)), HIER)
    with pytest.raises(UserError, match="GroupNorm"):
        stage_relevance(model, torch.rand(1, 3, 8, 8), "fine")


def test_squeeze_excitation_gate_is_allowed_and_a_composite_can_name_a_layer():
    check_explainable(torchvision.models.mobilenet_v3_small())  # Hardsigmoid gates, Hardswish
    composite = Composite(
        [((nn.Conv2d,), ZPlus()), ((nn.Linear,), Epsilon()), ((nn.GroupNorm,), Pass())]
    )
    check_explainable(WithGroupNorm(), composite)
    r = lrp(WithGroupNorm(), torch.rand(2, 3, 8, 8), 1, composite=composite)
    assert r.shape == (2, 3, 8, 8) and r.abs().sum() > 0


# -- train-mode models -------------------------------------------------------------------------


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
    )


def _same(a, b) -> bool:
    state_a, *flags_a = a
    state_b, *flags_b = b
    return flags_a == flags_b and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_train_mode_model_explained_in_eval_mode_and_left_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
                        nn.Flatten(), nn.Linear(216, 3)).double()  # fmt: skip
    x = images()
    expected = lrp(net.eval(), x, 1)
    net.train()
    net[3].eval()  # a mixed-mode model: each flag comes back as it was
    net[0].weight.requires_grad_(False)
    before = _snapshot(net)
    first, second = lrp(net, x, 1), lrp(net, x, 1)
    assert torch.equal(first, second) and torch.equal(first, expected)
    assert _same(before, _snapshot(net))


def test_train_mode_c2f_stage_relevance_left_unchanged():
    torch.manual_seed(0)
    cfg = VGGConfig(width=0.0625, input_size=32, batch_norm=True, head_width=16)
    model = C2FVGG16(HIER, cfg).double()
    x = images(size=32)
    expected = stage_relevance(model.eval(), x, "fine")
    model.train()
    before = _snapshot(model)
    for _ in range(2):
        torch.testing.assert_close(stage_relevance(model, x, "fine"), expected, rtol=0, atol=0)
    assert _same(before, _snapshot(model))


# -- data flow ---------------------------------------------------------------------------------


class Unpaired(nn.Module):
    """A conv and its BatchNorm in separate containers, the BatchNorm registered first (container
    order says nothing), and a conv output used twice (by the BatchNorm and a skip path)."""

    def __init__(self):
        super().__init__()
        self.norms = nn.ModuleList([nn.BatchNorm2d(6)])
        self.convs = nn.ModuleList([nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)])
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(6 * 64, 3))

    def forward(self, x):
        h = F.relu(self.convs[0](x))
        z = self.convs[1](h)
        return self.head(self.norms[0](z) + z)


def test_batchnorm_folded_in_data_flow_with_fan_out():
    torch.manual_seed(1)
    net = Unpaired().double().eval()
    with torch.no_grad():
        bn = net.norms[0]
        bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.1, 0.1)
    # reference: the same function with the pair folded by hand into a second conv
    folded = nn.Conv2d(6, 6, 3, padding=1).double()
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    with torch.no_grad():
        folded.weight.copy_(net.convs[1].weight * scale[:, None, None, None])
        folded.bias.copy_((net.convs[1].bias - bn.running_mean) * scale + bn.bias)

    class HandFolded(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0, self.c1, self.folded, self.head = net.convs[0], net.convs[1], folded, net.head

        def forward(self, x):
            h = F.relu(self.c0(x))
            return self.head(self.folded(h) + self.c1(h))

    x, t = images(), torch.tensor([0, 2])
    ref = lrp(HandFolded().eval(), x, t)
    assert rel_err(lrp(net, x, t), ref) <= 1e-10


class FunctionalNormalize(nn.Module):
    """Normalization written inline (no Normalize module) before a padding module."""

    def __init__(self, net):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.net = net

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def test_input_rule_goes_to_the_first_linear_layer_in_data_flow():
    torch.manual_seed(2)
    net = body().double().eval()
    x, t = images(), torch.tensor([1, 3])
    reference = lrp(nn.Sequential(Normalize(MEAN, STD), net).double(), x, t)
    # functional normalization instead of the Normalize module: same input rule, same map
    functional = FunctionalNormalize(net).double()
    torch.testing.assert_close(lrp(functional, x, t), reference)
    # explicit padding between Normalize and the first conv: the flat rule goes to the conv,
    # and the relevance of padded entries is dropped (Zennit on the normalized input agrees)
    padded = nn.Sequential(nn.ZeroPad2d(1), *body()).double().eval()
    ours = lrp(nn.Sequential(Normalize(MEAN, STD), padded).double(), x, t)
    ref = zennit_relevance(padded, Normalize(MEAN, STD).double()(x), t, 4)
    assert rel_err(ours, ref) <= 1e-8
    # the flat rule spreads relevance regardless of pixel values: black pixels get some
    assert (ours[:, :, 0, 0] != 0).all()


# -- grayscale ---------------------------------------------------------------------------------


def test_grayscale_model_matches_zennit_and_conserves():
    torch.manual_seed(3)
    net = nn.Sequential(*list(body(in_channels=1))).double().eval()
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.zeros_(m.bias)
    x, t = images(channels=1), torch.tensor([0, 3])
    model = nn.Sequential(Normalize((0.5,), (0.25,)), net).double()
    ours = lrp(model, x, t)
    assert ours.shape == x.shape
    assert rel_err(ours, zennit_relevance(net, model[0](x), t, 4)) <= 1e-8
    torch.testing.assert_close(ours.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64), rtol=1e-3,
                               atol=1e-3)  # fmt: skip


def test_grayscale_image_into_an_rgb_model_sums_the_copies():
    """A grayscale image repeated to 3 channels (by the model, or by a Normalize with RGB
    statistics): each gray pixel gets the summed relevance of its copies."""
    torch.manual_seed(4)
    net = body().double().eval()
    x1, t = images(channels=1), torch.tensor([2, 0])
    rgb = lrp(nn.Sequential(Normalize(MEAN, STD), net).double(), x1.expand(-1, 3, -1, -1), t)

    class Repeated(nn.Module):
        def __init__(self):
            super().__init__()
            self.normalize, self.net = Normalize(MEAN, STD), net

        def forward(self, x):
            return self.net(self.normalize(x.expand(-1, 3, -1, -1)))

    repeated = Repeated().double()
    torch.testing.assert_close(lrp(repeated, x1, t), rgb.sum(1, keepdim=True))
    broadcast = nn.Sequential(Normalize(MEAN, STD), net).double()
    torch.testing.assert_close(lrp(broadcast, x1, t), rgb.sum(1, keepdim=True))
    c2f = InducedC2F(net, HIER, mean=MEAN, std=STD)
    assert stage_relevance(c2f, x1, "coarse").shape == x1.shape
