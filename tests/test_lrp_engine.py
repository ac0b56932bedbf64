"""Engine shortcuts that must not change a result: the flat rule computes one output channel
where all are equal, and rule parameters are cached across explanations, reused while the model
is unchanged and recomputed after every kind of change (those tests compare with a fresh copy of
the changed model, which has no cache entries)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from c2f_attacks.lrp import ZPlus, epsilon_gamma_box, lrp

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat


def convnet() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    )  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def images(n: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def explain(model: nn.Module, x: torch.Tensor | None = None, composite=None) -> torch.Tensor:
    x = images() if x is None else x
    return lrp(model, x, torch.tensor([0, 1, 2]), composite or "epsilon_plus_flat")


def assert_fresh(model: nn.Module, x: torch.Tensor | None = None, composite=None) -> None:
    """The (cached) explanation of ``model`` is exactly that of an uncached copy."""
    fresh = explain(copy.deepcopy(model), x, composite)
    torch.testing.assert_close(explain(model, x, composite), fresh, rtol=0, atol=0)


def _head(channels: int) -> list[nn.Module]:
    return [nn.ReLU(), nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)]


@pytest.mark.parametrize(
    "layers",
    [
        [nn.Conv2d(3, 6, 3, padding=1), *_head(6)],
        [nn.Conv2d(3, 6, 3, padding=1, groups=3), *_head(6)],  # each group: its own inputs
        [nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 3)],
    ],
    ids=["conv", "grouped_conv", "linear"],
)
def test_flat_input_layer_matches_zennit(layers):
    torch.manual_seed(0)
    model = nn.Sequential(*layers).double()
    for m in model.modules():  # non-zero biases
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(m.bias, -0.1, 0.1)
    x = images().double()
    target = torch.tensor([0, 1, 2])
    with Gradient(model, EpsilonPlusFlat()) as attributor:
        _, ref = attributor(x, F.one_hot(target, 3).double())
    torch.testing.assert_close(lrp(model, x, target), ref, rtol=1e-9, atol=1e-12)


def test_parameters_computed_once_while_unchanged(monkeypatch):
    calls = []
    original = ZPlus.params
    monkeypatch.setattr(ZPlus, "params", lambda self, *a: calls.append(1) or original(self, *a))
    model = convnet()
    first = explain(model)
    assert len(calls) == 1  # the second convolution (the first is an input layer: flat)
    torch.testing.assert_close(explain(model), first, rtol=0, atol=0)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "change",
    ["in_place", "sgd", "fused_adam", "load_state_dict", "new_parameter", "half_round_trip"],
)
def test_parameter_changes_are_seen(change):
    model = convnet()
    explain(model)
    conv = model[3]
    if change == "in_place":
        with torch.no_grad():
            conv.weight.mul_(-1.5)
    elif change in ("sgd", "fused_adam"):
        opt = (
            torch.optim.SGD(model.parameters(), lr=1.0)
            if change == "sgd"
            else torch.optim.Adam(model.parameters(), lr=0.5, fused=True)
        )
        model(images()).sum().backward()
        opt.step()
        model.zero_grad()
    elif change == "load_state_dict":
        other = convnet()
        with torch.no_grad():
            other[3].weight.normal_()
        model.load_state_dict(other.state_dict())
    elif change == "new_parameter":
        conv.weight = nn.Parameter(torch.randn_like(conv.weight))
    else:  # values rounded; the float32 storage may land where the old one was
        model.half().float()
    assert_fresh(model)


def test_rule_settings_are_part_of_the_entry():
    model = convnet()
    explain(model, composite=epsilon_gamma_box(gamma=0.25))
    assert_fresh(model, composite=epsilon_gamma_box(gamma=1.0))


def test_batchnorm_statistics_updated_in_train_mode_are_seen():
    model = convnet()
    explain(model)
    with torch.no_grad():
        model.train()(images(8) * 3)  # updates running statistics in place, version unchanged
    model.eval()
    assert_fresh(model)


def test_dtype_change_is_seen():
    model = convnet()
    explain(model)
    model.double()
    assert_fresh(model, images().double())


class FunctionalBatchNorm(nn.Module):
    """A convolution (z+, after the flat input layer) whose running statistics ``F.batch_norm``
    updates itself, without a BatchNorm module."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.conv = nn.Conv2d(4, 5, 3)
        self.register_buffer("mean", torch.zeros(5))
        self.register_buffer("var", torch.ones(5))
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))

    def forward(self, x, update: bool = False):
        z = self.conv(self.stem(x))
        return self.head(F.batch_norm(z, self.mean, self.var, training=update, momentum=0.5))


def test_functional_batchnorm_statistics_updates_are_seen():
    torch.manual_seed(0)
    model = FunctionalBatchNorm().eval()
    explain(model)
    with torch.no_grad():
        model(images(8) * 3, update=True)
    assert_fresh(model)
