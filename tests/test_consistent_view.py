"""The consistent fine view: scores whose argmax is the C2F fine decision, exactly, and the
external attacks' views of the fine stage (consistent and flat)."""

import pytest
import torch

from c2f_attacks import Hierarchy
from c2f_attacks.attacks import consistent_fine_logits, create_attack
from c2f_attacks.attacks.external import StageModel
from c2f_attacks.attacks.stage import StageView
from c2f_attacks.errors import UserError
from c2f_attacks.models.base import fine_prediction
from tests.conftest import small_c2f

#: groups of 3, 1, 2 and 3 classes
GROUPS = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"], "d": ["d1", "d2", "d3"]}


@pytest.mark.parametrize(
    "dtype,scales",
    [
        (torch.float16, (1e-3, 1.0, 1e2, 1e4)),
        (torch.float32, (1e-4, 1.0, 1e4, 1e8)),
        (torch.float64, (1e-8, 1.0, 1e8, 1e100)),
    ],
)
def test_argmax_of_the_view_is_the_c2f_fine_decision_exactly(dtype, scales):
    """Over many random logits at several scales, and on whole numbers (many exact ties in both
    stages, broken by the first index as the C2F argmax breaks them)."""
    h = Hierarchy.from_dict(GROUPS)
    g = torch.Generator().manual_seed(0)
    mismatches = 0
    for scale in scales:
        for rounded in (False, True):
            coarse = torch.randn(4096, h.num_coarse, generator=g, dtype=torch.float64)
            fine = torch.randn(4096, h.num_fine, generator=g, dtype=torch.float64)
            if rounded:  # few distinct values: ties everywhere
                coarse, fine = coarse.round(), fine.round()
            coarse, fine = (coarse * scale).to(dtype), (fine * scale).to(dtype)
            decision = fine_prediction(fine, coarse.argmax(1), h.group_mask())
            view = consistent_fine_logits(coarse, fine, h.fine_to_coarse, decision)
            # float16 at 1e4 overflows to -inf far from the decision: still no NaN
            assert view.dtype == dtype and not view.isnan().any()
            mismatches += int((view.argmax(1) != decision).sum())
    assert mismatches == 0


def test_the_log_probability_view_does_not_give_the_c2f_decision():
    """log p(g) + log p(j | g) prefers a group whose fine softmax is peaked, even where C2F
    decides the other group: coarse (a: 1.0, b: 0.9); a's fine logits tie, b's are peaked."""
    h = Hierarchy.from_dict({"a": ["a1", "a2"], "b": ["b1", "b2"]})
    coarse = torch.tensor([[1.0, 0.9]])
    fine = torch.tensor([[0.0, 0.0, 10.0, 0.0]])
    log_prob = torch.log_softmax(coarse, 1)[:, h.fine_to_coarse] + torch.cat(
        [torch.log_softmax(fine[:, :2], 1), torch.log_softmax(fine[:, 2:], 1)], 1
    )
    decision = fine_prediction(fine, coarse.argmax(1), h.group_mask())
    assert decision.item() == 0 and log_prob.argmax(1).item() == 2
    view = consistent_fine_logits(coarse, fine, h.fine_to_coarse, decision)
    assert view.argmax(1).item() == 0
    assert fine.argmax(1).item() == 2  # the flat view is wrong too


def test_differences_of_the_view_are_the_c2f_margins():
    """d_k - d_f: the fine margin inside the decided group, the coarse margin to another group's
    best class, plus that group's fine margin to its other classes (float64, exact sums)."""
    h = Hierarchy.from_dict({"a": ["a1", "a2"], "b": ["b1", "b2"]})
    coarse = torch.tensor([[2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    fine = torch.tensor([[1.0, 3.0, 4.0, 0.25]], dtype=torch.float64, requires_grad=True)
    view = consistent_fine_logits(coarse, fine, h.fine_to_coarse, torch.tensor([1]))
    d = (view - view[0, 1]).detach()[0].tolist()
    assert d == [1.0 - 3.0, 0.0, 0.5 - 2.0, (0.5 - 2.0) + (0.25 - 4.0)]
    # the gradient reaches the coarse logits: an attack on the view can change the group
    (grad,) = torch.autograd.grad(view[0, 2] - view[0, 1], coarse)
    assert grad.tolist() == [[-1.0, 1.0]]


def test_decision_logits_of_each_stage():
    model = small_c2f(2)
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for stage in ("coarse", "fine"):
            view = StageView(model, stage)
            logits, pred, out = view.forward(x)
            d = view.decision_logits(logits, out)
            assert torch.equal(d.argmax(1), pred.stage)
            if stage == "coarse":
                assert d is logits


def test_stage_model_views_of_the_fine_stage():
    model = small_c2f(2)
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        out = model(x)
        consistent = StageModel(model, "fine")(x)
        flat = StageModel(model, "fine", fine_view="flat")(x)
        coarse = StageModel(model, "coarse", fine_view="flat")(x)
    assert torch.equal(consistent.argmax(1), out.fine_pred)
    assert torch.equal(flat, out.fine_logits)
    assert torch.equal(coarse, out.coarse_logits)
    # this model's flat argmax leaves the decided group on some images: the views differ there
    assert (flat.argmax(1) != out.fine_pred).any()
    with pytest.raises(UserError, match="fine_view must be one of consistent, flat, got 'logprob'"):
        StageModel(model, "fine", fine_view="logprob")


def test_fine_view_is_a_setting_of_external_attacks():
    pytest.importorskip("torchattacks")
    from c2f_attacks.attacks import attack_info

    model = small_c2f(2)
    info = attack_info("torchattacks:DeepFool")
    assert info.settings["fine_view"].default == "consistent"
    atk = create_attack("torchattacks:DeepFool", model, stage="fine", fine_view="flat")
    assert atk.stage_model.fine_view == "flat" and "fine_view='flat'" in repr(atk)
    assert create_attack("torchattacks:DeepFool", model, stage="fine").fine_view == "consistent"
    with pytest.raises(UserError, match="fine_view must be one of"):
        create_attack("torchattacks:FAB", model, stage="fine", fine_view="max")
