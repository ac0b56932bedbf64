"""Metrics: norm and share definitions on hand-made deltas, fooling with keep_coarse, and
attack_metrics recomputed from saved tensors (flat and C2F models)."""

from __future__ import annotations

import math

import pytest
import torch

from c2f_attacks.attacks import LRPF, PGD
from c2f_attacks.attacks.relevance import top_fraction_mask
from c2f_attacks.attacks.stage import Predictions, StageView
from c2f_attacks.metrics import (
    L0_TOLERANCE,
    attack_metrics,
    fooled,
    pearson,
    perturbation_norms,
    share_inside,
)
from tests.test_attacks import small_cnn, tiny_c2f


def test_perturbation_norms():
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, 0, 0, 0] = 0.5  # one pixel, one channel
    delta[0, 1, 0, 0] = -0.25  # same pixel, another channel: still one pixel
    delta[0, 2, 3, 3] = L0_TOLERANCE / 2  # below tolerance: not a changed pixel
    delta[1] = 0.1
    norms = perturbation_norms(delta)
    assert norms["linf"].tolist() == pytest.approx([0.5, 0.1])
    assert norms["l2"][0].item() == pytest.approx(math.sqrt(0.25 + 0.0625), rel=1e-6)
    assert norms["l0"].tolist() == pytest.approx([1 / 16, 1.0])


def test_share_inside_and_pearson():
    delta = torch.zeros(2, 3, 2, 2)
    delta[0, :, 0, 0] = 0.3
    delta[0, 0, 1, 1] = -0.1
    region = torch.zeros(2, 2, 2, dtype=torch.bool)
    region[:, 0, 0] = True
    share = share_inside(delta, region)
    assert share.tolist() == pytest.approx([0.9, 0.0])  # zero delta -> 0
    a = torch.randn(3, 5, 5)
    assert pearson(a, 2 * a + 1).tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    assert pearson(a, -a).tolist() == pytest.approx([-1.0] * 3, abs=1e-6)
    assert pearson(a, torch.ones_like(a)).tolist() == [0.0] * 3


def test_top_fraction_mask_counts_exactly():
    heat = torch.arange(32.0).view(2, 4, 4)
    mask = top_fraction_mask(heat, 0.25)
    assert mask.sum(dim=(1, 2)).tolist() == [4, 4]
    assert mask[0].flatten()[-4:].all() and not mask[0].flatten()[:-4].any()
    assert top_fraction_mask(heat, 0.01).sum(dim=(1, 2)).tolist() == [1, 1]


def test_fooled_keep_coarse():
    view = StageView(tiny_c2f(), "fine")
    clean = Predictions(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]))
    adv = Predictions(torch.tensor([1, 4, 0]), torch.tensor([0, 1, 0]), torch.tensor([1, 4, 0]))
    assert fooled(view, clean, adv, keep_coarse=False).tolist() == [True, True, False]
    assert fooled(view, clean, adv, keep_coarse=True).tolist() == [True, False, False]


def test_attack_metrics_flat_recomputed_from_tensors():
    model = small_cnn(0)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(10, 3, 16, 16, generator=g), torch.randint(0, 5, (10,), generator=g)
    res = PGD(model, eps=0.2, alpha=0.05, steps=5)(x)
    m = attack_metrics(model, x, res.x_adv, y, None, relevance=False, queries=res.queries)
    assert m["fooling_ratio"] == pytest.approx(res.success.float().mean().item())
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    expected = res.success[correct].float().mean().item() if correct.any() else float("nan")
    assert m["success_rate"] == pytest.approx(expected, nan_ok=True)
    assert m["clean_acc"] == pytest.approx(correct.float().mean().item())
    assert m["linf_mean"] <= 0.2 + 1e-6 and m["l0_mean"] > 0.9
    assert m["queries_per_image"] == 10
    assert "relevance_shift" not in m and "object_share" not in m


def test_attack_metrics_c2f_with_relevance_and_masks():
    pytest.importorskip("c2f_attacks.lrp")
    model = tiny_c2f()
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, 32, 32, generator=g)
    labels = torch.randint(0, model.hierarchy.num_fine, (6,), generator=g)
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    res = PGD(model, eps=0.3, alpha=0.1, steps=3, stage="coarse", random_start=False)(x)
    m = attack_metrics(model, x, res.x_adv, labels, "coarse", masks)
    for key in ("clean_acc_coarse", "clean_acc_fine", "relevance_shift",
                "perturbation_in_relevance", "object_share", "linf_median", "l2_mean"):  # fmt: skip
        assert key in m
    if m["fooling_ratio"] > 0:
        # dense PGD spreads |delta| about evenly: a quarter of the pixels hold about a quarter
        assert 0.1 < m["object_share"] < 0.5
        assert 0 <= m["perturbation_in_relevance"] <= 1


def test_attack_metrics_in_chunks_equal_one_batch():
    """Metrics computed batch_size images at a time (bounded memory) equal the one-batch ones."""
    model = tiny_c2f()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(7, 3, 32, 32, generator=g)
    labels = torch.randint(0, model.hierarchy.num_fine, (7,), generator=g)
    masks = torch.rand(7, 32, 32, generator=g) > 0.5
    x_adv = PGD(model, eps=0.3, alpha=0.1, steps=3, stage="fine", random_start=False)(x).x_adv
    whole = attack_metrics(model, x, x_adv, labels, "fine", masks, batch_size=7)
    chunked = attack_metrics(model, x, x_adv, labels, "fine", masks, batch_size=3)
    assert whole.keys() == chunked.keys()
    for key, value in whole.items():
        assert chunked[key] == pytest.approx(value, rel=1e-5, nan_ok=True), key


def test_attack_metrics_flat_relevance():
    pytest.importorskip("c2f_attacks.lrp")
    model = small_cnn(0)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    res = PGD(model, eps=0.3, alpha=0.1, steps=3)(x)
    m = attack_metrics(model, x, res.x_adv, res.y, None, top_k=0.25)
    assert m["fooling_ratio"] > 0
    assert 0 <= m["relevance_shift"] <= 2
    assert 0.1 < m["perturbation_in_relevance"] < 0.5  # dense: about the region's 25% share


def test_attack_metrics_nan_when_nothing_fooled():
    model = small_cnn(0)
    x = torch.rand(4, 3, 16, 16)
    m = attack_metrics(model, x, x.clone(), torch.zeros(4, dtype=torch.long), None, relevance=False)
    assert m["fooling_ratio"] == 0 and math.isnan(m["linf_mean"])


def test_attack_metrics_rejects_bad_input():
    model = small_cnn(0)
    x = torch.rand(4, 3, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="shape"):
        attack_metrics(model, x, x[:2], y, None, relevance=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack_metrics(model, x, x + 2, y, None, relevance=False)
    with pytest.raises(ValueError, match="flat classifier"):
        attack_metrics(model, x, x, y, "coarse", relevance=False)
    with pytest.raises(ValueError, match="keep_coarse"):
        attack_metrics(tiny_c2f(), torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32), y, "coarse",
                       keep_coarse=True, relevance=False)  # fmt: skip
    assert LRPF.keep_coarse
