"""Grayscale (1-channel) models: the channel count comes from the model, never a fixed 3."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from c2f_attacks.attacks import FGSM, LRPC, LRPF, PGD, get_criterion
from c2f_attacks.attacks.base import model_channels
from c2f_attacks.data.shapes import SHAPES_HIERARCHY
from c2f_attacks.evaluation import per_image_records
from c2f_attacks.figures import _grid, attack_figure, explanation_figure
from c2f_attacks.lrp import lrp, stage_relevance
from c2f_attacks.models import InducedC2F
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.runner import RunConfig, run
from tests.conftest import small_c2f

SIZE, EPS, TOP_K = 16, 16 / 255, 0.1


def gray_flat() -> nn.Module:
    """A flat 1-channel classifier over the shapes fine classes."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, SHAPES_HIERARCHY.num_fine),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module", params=["c2f", "induced"])
def model(request) -> C2FClassifier:
    if request.param == "c2f":
        return small_c2f(input_size=SIZE, in_channels=1)
    return InducedC2F(gray_flat(), SHAPES_HIERARCHY, mean=(0.5,), std=(0.25,)).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_the_channel_count_comes_from_the_model(model):
    assert model_channels(model) == 1
    assert model_channels(gray_flat()) == 1  # a flat model: its first convolution's
    assert model_channels(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))) is None  # unchecked


LRP_ARGS = dict(eps=EPS, alpha=4 / 255, steps=3, refresh=10, top_k=TOP_K)
ATTACKS = {
    "fgsm": lambda m: FGSM(m, eps=EPS, stage="coarse"),
    "pgd": lambda m: PGD(m, eps=EPS, alpha=4 / 255, steps=3, stage="fine"),
    "lrpc-lrp": lambda m: LRPC(m, mask="lrp", **LRP_ARGS),
    "lrpc-gradient": lambda m: LRPC(m, mask="gradient", **LRP_ARGS),
    "lrpf": lambda m: LRPF(m, **LRP_ARGS),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_attacks_keep_one_channel_and_their_budget(model, x, name):
    res = ATTACKS[name](model)(x)
    delta = res.x_adv - x
    assert res.x_adv.shape == (4, 1, SIZE, SIZE) and res.success.dtype == torch.bool
    assert 0 < delta.abs().max() <= EPS + 1e-6
    if name.startswith("lrp"):  # one mask (steps <= refresh): at most the top-k pixels move
        changed = (delta.abs() > 0).flatten(1).sum(dim=1)
        assert (changed <= math.ceil(TOP_K * SIZE * SIZE)).all()


def test_per_image_records_and_relevance_on_one_channel(model, x):
    res = PGD(model, eps=EPS, alpha=4 / 255, steps=3, stage="coarse")(x)
    y = torch.arange(4)
    masks = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    records = per_image_records(model, x, res.x_adv, y, "coarse", masks=masks, eps=EPS)
    assert len(records) == 4 and (records["linf"] <= EPS + 1e-6).all()
    assert records["l0"].between(0, 1).all() and records["object_share"].between(0, 1).all()
    assert records["relevance_shift"].notna().all()
    assert records["success"].tolist() == res.success.tolist()
    relevance = stage_relevance(model, x, "fine")
    assert relevance.shape == (4, 1, SIZE, SIZE) and torch.isfinite(relevance).all()
    flat = lrp(gray_flat(), x, target=0, composite="epsilon")
    assert flat.shape == (4, 1, SIZE, SIZE) and flat.abs().sum() > 0


def test_figures_draw_grayscale_images_in_gray(model, x, tmp_path):
    x_adv = FGSM(model, eps=EPS, stage="coarse")(x).x_adv
    rule = get_criterion("stage_changed", "coarse")
    attack_figure(model, x, x_adv, rule, tmp_path / "attack.png", examples=2)
    explanation_figure(model, x[:2], tmp_path / "explain.png")
    assert (tmp_path / "attack.png").stat().st_size > 5_000
    assert (tmp_path / "explain.png").stat().st_size > 5_000
    fig = _grid([[(np.full((4, 4), 0.25), "gray cell")]], "title")
    red, green, blue, _ = fig.axes[0].images[0].to_rgba(np.array([[0.25]]))[0, 0]
    assert red == green == blue  # a grey level, not a colour map's hue


def test_a_three_channel_batch_on_a_one_channel_model_names_the_shape(model, x):
    rgb = x.expand(-1, 3, -1, -1).contiguous()
    message = r"must have 1 channels, got shape \(4, 3, 16, 16\)"
    with pytest.raises(ValueError, match=message):
        FGSM(model, eps=EPS, stage="coarse")(rgb)
    with pytest.raises(ValueError, match=message):
        LRPC(model, **LRP_ARGS)(rgb)
    with pytest.raises(ValueError, match=message):
        per_image_records(model, rgb, rgb, torch.arange(4), "coarse")
    with pytest.raises(ValueError, match=message):  # a flat model: its first convolution's
        FGSM(gray_flat(), eps=EPS)(rgb, y=torch.arange(4))


def test_the_run_refuses_rgb_data_for_a_grayscale_model_before_attacking(tmp_path, monkeypatch):
    """The shapes images are RGB: the pre-flight names the mismatch, nothing is written."""
    (tmp_path / "gray_factory.py").write_text(
        "from tests.test_grayscale import gray_flat\ndef make():\n    return gray_flat()\n"
    )
    (tmp_path / "h.json").write_text(json.dumps(SHAPES_HIERARCHY.to_dict()))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    cfg = RunConfig(model="gray_factory:make", hierarchy=str(tmp_path / "h.json"), n=2,
                    attacks=["fgsm"], stages=["coarse"], protocols=["fixed"], out=str(out),
                    progress=False, figures=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"shapes for model gray_factory:make must have 1 "
                                         r"channels, got shape \(1, 3, 32, 32\)"):  # fmt: skip
        run(cfg)
    assert not (out / "leaderboard.csv").exists() and not (out / "records").exists()
