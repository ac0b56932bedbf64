"""Per-image values: norm and share definitions on hand-made deltas, the success rules and flags
on a model whose predictions the test sets pixel by pixel, chunked evaluation, input checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from c2f_attacks import Hierarchy
from c2f_attacks.evaluation import (
    L0_TOLERANCE,
    RECORD_COLUMNS,
    aggregate,
    clean_stage_heatmap,
    pearson,
    per_image_records,
    perturbation_norms,
    share_inside,
)
from c2f_attacks.evaluation.records import RECORD_KINDS
from c2f_attacks.models.base import C2FClassifier
from tests.conftest import float64, small_c2f, small_cnn

HIERARCHY = Hierarchy.from_dict({"animal": ["cat", "dog", "cow"], "vehicle": ["car", "bus"],
                                 "plant": ["tree"]})  # fmt: skip


class ReadoutC2F(C2FClassifier):
    """Logits read from pixels: coarse k = x[0, 0, k], fine j = x[1, 0, j]. A test writes the
    predictions it wants into the image."""

    def __init__(self):
        super().__init__(HIERARCHY)

    def logits(self, x):
        return x[:, 0, 0, :3], x[:, 1, 0, :6]


def image(coarse: int, fine: int) -> torch.Tensor:
    x = torch.full((3, 8, 8), 0.1)
    x[0, 0, coarse] = 0.9
    x[1, 0, fine] = 0.9
    return x


def batch(pairs) -> torch.Tensor:
    return torch.stack([image(c, f) for c, f in pairs])


def noisy(x: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + eps * torch.sign(torch.rand(x.shape, generator=g) - 0.5)).clamp(0, 1)


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
    assert share_inside(delta, region).tolist() == pytest.approx([0.9, 0.0])  # zero delta -> 0
    a = torch.randn(3, 5, 5)
    assert pearson(a, 2 * a + 1).tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    assert pearson(a, -a).tolist() == pytest.approx([-1.0] * 3, abs=1e-6)
    assert pearson(a, torch.ones_like(a)).tolist() == [0.0] * 3


# (clean coarse, clean fine) -> (adv coarse, adv fine); fine 0-2 are animals (coarse 0), 3-4
# vehicles (1), 5 the plant (2)
CLEAN = [(0, 0), (0, 1), (1, 3), (0, 2), (2, 5)]
ADV = [(0, 1), (1, 4), (1, 3), (0, 2), (0, 0)]
#      fine in  both    none    none   both flip


def test_flags_and_both_fine_rules():
    model = ReadoutC2F()
    x, x_adv = batch(CLEAN), batch(ADV)
    y = torch.tensor([0, 2, 3, 2, 1])  # images 1 and 4 misclassified at the fine stage
    rec = per_image_records(model, x, x_adv, y, "fine", relevance=False)
    assert list(rec.columns) == list(RECORD_COLUMNS)
    assert rec.y_coarse.tolist() == [0, 0, 1, 0, 0]
    assert rec.clean_fine.tolist() == [0, 1, 3, 2, 5] and rec.adv_coarse.tolist() == [0, 1, 1, 0, 0]
    assert rec.fine_flipped.tolist() == [True, True, False, False, True]
    assert rec.coarse_flipped.tolist() == [False, True, False, False, True]
    assert rec.fine_flipped_coarse_kept.tolist() == [True, False, False, False, False]
    assert rec.success.tolist() == rec.fine_flipped.tolist()  # PGD's fine rule: any fine change
    assert rec.misclassified.tolist() == [False, True, False, False, True]
    assert (rec.correct == ~rec.misclassified).all()
    lrpf = per_image_records(model, x, x_adv, y, "fine", criterion="fine_changed_coarse_kept",
                             relevance=False)  # fmt: skip
    assert lrpf.success.tolist() == [True, False, False, False, False]
    coarse = per_image_records(model, x, x_adv, y, "coarse", relevance=False)
    assert coarse.success.tolist() == [False, True, False, False, True]
    assert coarse.misclassified.tolist() == [False, False, False, False, True]  # coarse of y
    row = aggregate(rec)
    assert row["fooling_ratio"] == 0.6 and row["fr_fine_any"] == 0.6
    assert row["fr_fine_coarse_kept"] == 0.2 and row["coarse_flip_share"] == pytest.approx(2 / 3)
    assert row["misclassified"] == 2 and row["success_rate"] == pytest.approx(1 / 3)


def test_misclassified_image_is_not_fooled_by_a_zero_perturbation():
    model = ReadoutC2F()
    x = batch(CLEAN)
    wrong = torch.tensor([1, 0, 4, 0, 0])  # every label disagrees with the clean prediction
    for stage in ("coarse", "fine"):
        rec = per_image_records(model, x, x.clone(), wrong, stage, relevance=False)
        assert not rec.success.any()
        assert rec.linf.tolist() == [0.0] * 5
    assert rec.misclassified.all()


def test_given_values_and_unavailable_ones():
    model = ReadoutC2F()
    x, x_adv = batch(CLEAN), batch(ADV)
    y = torch.tensor([0, 1, 3, 2, 5])
    rec = per_image_records(
        model, x, x_adv, y, "fine", relevance=False, queries=torch.tensor([3, 4, 5, 6, 7]),
        first_success_step=torch.tensor([0, 2, -1, -1, 1]), eps=0.5,
        index=torch.tensor([10, 11, 12, 13, 14]),
    )  # fmt: skip
    assert rec["index"].tolist() == [10, 11, 12, 13, 14]
    assert rec.queries.tolist() == [3, 4, 5, 6, 7] and rec.eps.tolist() == [0.5] * 5
    assert rec.first_success_step.tolist() == [0, 2, -1, -1, 1]
    bare = per_image_records(model, x, x_adv, y, "fine", relevance=False)
    assert bare.queries.tolist() == [-1] * 5 and bare.first_success_step.tolist() == [-1] * 5
    assert bare.eps.isna().all() and bare.object_share.isna().all()
    assert bare.relevance_shift.isna().all() and bare.perturbation_in_relevance.isna().all()
    assert bare["index"].tolist() == [0, 1, 2, 3, 4]
    assert math.isnan(aggregate(bare)["queries_per_image"])
    assert aggregate(rec)["queries_per_image"] == 5.0


def test_dtypes():
    y = torch.zeros(5, dtype=torch.long)
    rec = per_image_records(ReadoutC2F(), batch(CLEAN), batch(ADV), y, "fine", relevance=False)
    kinds = {"int": "int64", "float": "float64", "bool": "bool"}
    assert {c: str(t) for c, t in rec.dtypes.items()} == {
        c: kinds[k] for c, k in RECORD_KINDS.items()
    }


def test_flat_model_records():
    model = small_cnn(0)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(10, 3, 16, 16, generator=g), torch.randint(0, 5, (10,), generator=g)
    x_adv = noisy(x, 0.3)
    rec = per_image_records(model, x, x_adv, y, None, relevance=False)
    with torch.no_grad():
        clean, adv = model(x).argmax(1), model(x_adv).argmax(1)
    assert rec.clean_fine.tolist() == clean.tolist() and rec.adv_fine.tolist() == adv.tolist()
    assert rec.success.tolist() == (clean != adv).tolist()
    assert rec.correct.tolist() == (clean == y).tolist()
    assert (rec.y_coarse == -1).all() and not rec.coarse_flipped.any()
    row = aggregate(rec)
    assert math.isnan(row["clean_acc_coarse"]) and math.isnan(row["fr_fine_any"])
    assert row["clean_acc_fine"] == pytest.approx((clean == y).float().mean().item())
    with pytest.raises(ValueError, match="0..4"):
        per_image_records(model, x, x_adv, y + 5, None, relevance=False)


def test_relevance_and_object_share():
    pytest.importorskip("c2f_attacks.lrp")
    model = small_c2f(input_size=16)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, 16, 16, generator=g)
    y = torch.randint(0, 6, (6,), generator=g)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True  # a quarter of the pixels
    rec = per_image_records(model, x, noisy(x, 0.05), y, "coarse", masks=masks, top_k=0.25)
    # a dense sign perturbation spreads |delta| evenly: a quarter of the pixels hold a quarter
    assert rec.object_share.to_numpy() == pytest.approx(0.25, abs=0.03)
    assert rec.perturbation_in_relevance.to_numpy() == pytest.approx(0.25, abs=0.03)
    assert ((rec.relevance_shift >= 0) & (rec.relevance_shift <= 2)).all()
    same = per_image_records(model, x, x.clone(), y, "coarse", masks=masks)
    assert same.relevance_shift.to_numpy() == pytest.approx(0.0, abs=1e-5)
    assert (same.object_share == 0).all()  # a zero perturbation has share 0


def test_chunks_equal_one_batch():
    """Records computed batch_size images at a time (bounded memory) equal the one-batch ones.
    Float64: in float32 a convolution may round differently in a batch of 3 than of 7, which
    can move a pixel across the top-k cut of the relevance region."""
    g = torch.Generator().manual_seed(5)
    model, x = float64(small_c2f(input_size=16), torch.rand(7, 3, 16, 16, generator=g))
    y = torch.randint(0, 6, (7,), generator=g)
    masks = torch.rand(7, 16, 16, generator=g) > 0.5
    x_adv = noisy(x, 0.2)
    whole = per_image_records(model, x, x_adv, y, "fine", masks=masks, batch_size=7)
    chunked = per_image_records(model, x, x_adv, y, "fine", masks=masks, batch_size=3)
    floats = [c for c in whole.columns if whole[c].dtype == np.float64]
    pd.testing.assert_frame_equal(whole.drop(columns=floats), chunked.drop(columns=floats))
    np.testing.assert_allclose(whole[floats], chunked[floats], rtol=1e-5, atol=1e-7)


def test_a_given_clean_heatmap_gives_the_same_records():
    """The runner computes the clean map once per batch and stage and hands it to every row."""
    model = small_c2f(input_size=16)
    g = torch.Generator().manual_seed(6)
    x = torch.rand(5, 3, 16, 16, generator=g)
    y = torch.randint(0, 6, (5,), generator=g)
    x_adv = noisy(x, 0.1)
    for stage in ("coarse", "fine"):
        heat = clean_stage_heatmap(model, x, stage, batch_size=2)
        assert heat.shape == (5, 16, 16)
        given = per_image_records(model, x, x_adv, y, stage, clean_heatmap=heat, batch_size=2)
        computed = per_image_records(model, x, x_adv, y, stage, batch_size=2)
        pd.testing.assert_frame_equal(given, computed)
    with pytest.raises(ValueError, match=r"clean_heatmap must have shape \(5, 16, 16\)"):
        per_image_records(model, x, x_adv, y, "fine", clean_heatmap=heat[:4])


def test_rejects_bad_input():
    model = ReadoutC2F()
    x, y = batch(CLEAN), torch.tensor([0, 1, 3, 2, 5])
    with pytest.raises(ValueError, match="shape"):
        per_image_records(model, x, x[:2], y, "fine", relevance=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        per_image_records(model, x, x + 2, y, "fine", relevance=False)
    with pytest.raises(ValueError, match="not defined for the coarse stage"):
        per_image_records(model, x, x, y, "coarse", criterion="fine_changed_coarse_kept",
                          relevance=False)  # fmt: skip
    with pytest.raises(ValueError, match="0..5"):
        per_image_records(model, x, x, y + 6, "fine", relevance=False)
    with pytest.raises(ValueError, match="masks"):
        per_image_records(model, x, x, y, "fine", masks=torch.ones(5, 4, 4), relevance=False)
    with pytest.raises(ValueError, match="queries"):
        per_image_records(model, x, x, y, "fine", queries=torch.ones(4), relevance=False)
    with pytest.raises(ValueError, match="batch_size"):
        per_image_records(model, x, x, y, "fine", batch_size=0, relevance=False)
    with pytest.raises(ValueError, match="stage"):
        per_image_records(small_cnn(), torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8),
                          torch.zeros(2, dtype=torch.long), "coarse", relevance=False)  # fmt: skip
