"""One label convention: y is the global fine label on C2F models, success is judged against the
clean prediction (the criteria), and a misclassified image is flagged, never a free success."""

from __future__ import annotations

import pytest
import torch

from c2f_attacks.attacks import (
    FGSM,
    LRPC,
    LRPF,
    PGD,
    Attack,
    FineChangedCoarseKept,
    Predictions,
    StageChanged,
    get_criterion,
)
from c2f_attacks.attacks.base import Perturbed
from tests.conftest import shapes_test, small_cnn

FAST_LRP = {"alpha": 0.05, "steps": 6, "top_k": 0.2}
ATTACKS = {
    "pgd-coarse": lambda m: PGD(m, eps=0.1, steps=3, stage="coarse"),
    "pgd-fine": lambda m: PGD(m, eps=0.1, steps=3, stage="fine", early_stop=True),
    "fgsm-fine": lambda m: FGSM(m, eps=0.1, stage="fine"),
    "lrpc": lambda m: LRPC(m, **FAST_LRP),
    "lrpf": lambda m: LRPF(m, **FAST_LRP),
}


def test_criteria():
    clean = Predictions(torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3]))
    adv = Predictions(torch.tensor([1, 5, 4]), torch.tensor([0, 1, 1]), torch.tensor([1, 5, 4]))
    assert StageChanged("coarse")(clean, adv).tolist() == [False, True, False]
    assert StageChanged("fine")(clean, adv).tolist() == [False, True, True]
    assert StageChanged()(clean, adv).tolist() == [False, True, True]  # flat: .stage
    assert FineChangedCoarseKept()(clean, adv).tolist() == [False, False, True]
    assert get_criterion("fine_changed_coarse_kept", "fine") == FineChangedCoarseKept()
    assert get_criterion("stage_changed", "coarse") == StageChanged("coarse")
    with pytest.raises(ValueError, match="not defined for the coarse stage"):
        get_criterion("fine_changed_coarse_kept", "coarse")
    with pytest.raises(ValueError, match="unknown success rule 'any'"):
        get_criterion("any", "fine")
    with pytest.raises(ValueError, match="stage"):
        StageChanged("middle")


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_c2f_labels_every_stage(model, x, name, explicit):
    """The loss target is the clean stage prediction whatever y says; success is the criterion
    against the clean predictions; misclassified compares with y's stage label."""
    atk = ATTACKS[name](model)
    with torch.no_grad():
        clean = model(x)
    stage_pred = clean.coarse_pred if atk.stage == "coarse" else clean.fine_pred
    # fine labels that disagree with the prediction on about half of the images
    y = torch.where(torch.arange(8) % 2 == 0, clean.fine_pred, (clean.fine_pred + 4) % 12)
    res = atk(x, y) if explicit else atk(x)
    assert torch.equal(res.y, stage_pred)
    with torch.no_grad():
        adv = model(res.x_adv)
    changed = (adv.fine_pred != clean.fine_pred) if atk.stage == "fine" else (
        adv.coarse_pred != clean.coarse_pred)  # fmt: skip
    if name == "lrpf":
        changed &= adv.coarse_pred == clean.coarse_pred
    assert torch.equal(res.success, changed)
    assert torch.equal(res.clean.fine, clean.fine_pred)
    assert torch.equal(res.adv.coarse, adv.coarse_pred)
    if explicit:
        y_stage = model.fine_to_coarse[y] if atk.stage == "coarse" else y
        assert torch.equal(res.misclassified, y_stage != stage_pred)
        assert res.misclassified.any()
    else:
        assert not res.misclassified.any()
    # y never steers a C2F attack: with and without it, the same images
    assert torch.equal(res.x_adv, ATTACKS[name](model)(x).x_adv)


def test_flat_models_keep_torchattacks_labels(x):
    """Flat: the loss uses y (so y changes the result); success still means "prediction
    changed from clean"; misclassified = y != clean prediction."""
    model = small_cnn(0)
    xs = torch.nn.functional.interpolate(x, size=16)
    with torch.no_grad():
        pred = model(xs).argmax(1)
    y = (pred + 1) % 5
    res = PGD(model, steps=3, random_start=False)(xs, y)
    assert torch.equal(res.y, y) and res.misclassified.all()
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != pred)
    assert not torch.equal(res.x_adv, PGD(model, steps=3, random_start=False)(xs).x_adv)
    same = PGD(model, steps=3, random_start=False)(xs, pred)
    assert not same.misclassified.any()


class _Idle(Attack):
    def _perturb(self, batch, counter):
        return Perturbed(batch.x.clone())


def test_misclassified_images_are_never_fooled_by_nothing(model, x):
    with torch.no_grad():
        clean = model(x)
    wrong = (clean.fine_pred + 4) % 12  # every image misclassified at the fine stage
    for stage in ("coarse", "fine"):
        res = _Idle(model, stage)(x, wrong)
        assert not res.success.any()
        assert res.misclassified.any()
        assert (res.first_success_step == -1).all()


def test_fine_labels_with_coarse_stage_regression(shipped):
    """Fine labels with stage="coarse" once counted as coarse labels: 12 of 16 images were
    "fooled" with their coarse prediction unchanged. Now no image succeeds without a coarse
    flip, and the labels' coarse classes only flag the misclassified ones."""
    x, y, _ = shapes_test(64)
    small = (y < shipped.hierarchy.num_coarse).nonzero().flatten()[:16]  # the labels once accepted
    x, y = x[small], y[small]
    res = FGSM(shipped, eps=1e-3, stage="coarse")(x, y)
    with torch.no_grad():
        clean, adv = shipped(x), shipped(res.x_adv)
    flipped = adv.coarse_pred != clean.coarse_pred
    assert torch.equal(res.success, flipped)
    assert not flipped.all()
    # the old rule, "prediction != y" with y read as a coarse label, calls many more fooled
    assert (adv.coarse_pred != y).sum() > res.success.sum()
    assert torch.equal(res.misclassified, shipped.fine_to_coarse[y] != clean.coarse_pred)
