"""LRPC / LRPF on a small C2F CNN: masks, stopping, first-success steps, success criteria,
budgets (eps-constrained and minimal eps), cost, checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from c2f_attacks.attacks import LRPC, LRPF, lrp_guided
from c2f_attacks.attacks.minimal_eps import RunStart
from c2f_attacks.errors import UserError
from c2f_attacks.lrp.explain import heatmap, stage_relevance_of, top_fraction_mask
from tests.conftest import float64, small_c2f, small_cnn

pytest.importorskip("c2f_attacks.lrp")

FAST = {"alpha": 0.05, "steps": 12, "top_k": 0.2}


def test_lrpc_flips_coarse_only_inside_its_mask(model, x):
    # one mask for the whole run (refresh >= steps): every changed pixel lies in the clean top-k
    # (recomputed here in another memory layout than the attack's: float64, so that rounding
    # cannot move a pixel across the top-k cut)
    model, x = float64(model, x)
    res = LRPC(model, refresh=FAST["steps"], **FAST)(x)
    out = model(x)
    adv = model(res.x_adv)
    assert res.success.any()
    assert torch.equal(res.success, adv.coarse_pred != out.coarse_pred)
    relevance = stage_relevance_of(model, x, "coarse", out.coarse_pred)
    mask = top_fraction_mask(heatmap(relevance), FAST["top_k"])
    changed = (res.x_adv - x).abs().amax(dim=1) > 0
    assert not (changed & ~mask).any()


def test_lrpc_stops_each_image_at_its_first_success(model, x):
    res = LRPC(model, refresh=FAST["steps"], **FAST)(x)
    margin_forwards = res.forwards - 1  # one LRP pass (the only mask refresh)
    linf = (res.x_adv - x).abs().flatten(1).amax(1)
    # s margin forwards: at most s steps of size alpha; an image whose s-th forward (s < steps)
    # already fooled the stage was frozen there, after s - 1 steps
    assert (linf <= margin_forwards * FAST["alpha"] + 1e-6).all()
    stopped = margin_forwards < FAST["steps"]
    assert stopped.any() and res.success[stopped].all()
    assert (linf[stopped] <= (margin_forwards[stopped] - 1) * FAST["alpha"] + 1e-6).all()
    assert (margin_forwards[~res.success] == FAST["steps"]).all()
    # the step each stopped image was seen successful at: after margin_forwards - 1 steps
    assert torch.equal(res.first_success_step[stopped], margin_forwards[stopped] - 1)
    assert (res.first_success_step[~res.success] == -1).all()


def test_lrpc_eps_budget(model, x):
    res = LRPC(model, eps=0.06, **FAST)(x)
    assert ((res.x_adv - x).abs().flatten(1).amax(1) <= 0.06 + 1e-6).all()
    assert torch.allclose(res.eps, torch.full((8,), 0.06))


@pytest.mark.parametrize("attack", [LRPC, LRPF])
def test_minimal_eps_bisects_a_per_image_budget(model, x, attack):
    model, x = float64(model, x)  # images are re-attacked alone and in shrinking sub-batches
    eps_max = 0.3
    res = attack(model, eps=eps_max, minimal_eps=True, search_steps=4, **FAST)(x)
    assert res.success.any()
    assert (res.eps <= eps_max).all() and (res.eps[res.success] < eps_max).any()
    linf = (res.x_adv - x).abs().flatten(1).amax(1)
    assert (linf <= res.eps + 1e-6).all()
    assert (res.first_success_step[res.success] >= 0).all()
    # the eps-constrained attack at an image's found budget succeeds again, with that image
    for i in res.success.nonzero().flatten()[:3].tolist():
        again = attack(model, eps=res.eps[i].item(), **FAST)(x[i : i + 1], index=torch.tensor([i]))
        assert again.success.item()
    # a budget at least the unbounded path's l-inf lets the constrained attack take that path
    # (when the path never goes beyond its final l-inf), so the search ends no higher, up to
    # its resolution eps_max / 2**4
    free = attack(model, **FAST)(x)
    both = free.success & res.success
    free_linf = (free.x_adv - x).abs().flatten(1).amax(1)
    assert (res.eps[both] <= free_linf[both] + eps_max / 2**4 + 1e-6).all()


@pytest.mark.parametrize("mask", ["lrp", "gradient", "random"])
def test_minimal_eps_reuses_the_clean_step_across_its_runs(model, x, mask, monkeypatch):
    # every run of the bisection starts at x: its first gradient and its mask there are the
    # first run's, so each image pays for one LRP pass at x, and the search ends where a search
    # that recomputes them does (float64: sub-batches round as the whole batch does)
    model, x = float64(model, x)
    settings = dict(eps=0.3, minimal_eps=True, search_steps=4, mask=mask, **FAST)
    at_clean = torch.zeros(len(x), dtype=torch.long)
    relevance_of = lrp_guided.stage_relevance_of

    def counted(model, images, *args, **kwargs):
        for row in images:
            at_clean[(x == row).flatten(1).all(1)] += 1
        return relevance_of(model, images, *args, **kwargs)

    monkeypatch.setattr(lrp_guided, "stage_relevance_of", counted)
    reused = LRPC(model, **settings)(x)
    if mask == "lrp":
        assert at_clean.max() == 1
    monkeypatch.setattr(RunStart, "get", lambda self, key, rows: None)
    recomputed = LRPC(model, **settings)(x)
    assert torch.equal(reused.eps, recomputed.eps)
    assert torch.equal(reused.x_adv, recomputed.x_adv)
    searched = reused.success & (reused.eps < 0.3)
    assert searched.any()
    assert (reused.queries[searched] < recomputed.queries[searched]).all()


def test_minimal_eps_needs_an_upper_bound(model):
    with pytest.raises(ValueError, match="minimal_eps"):
        LRPC(model, minimal_eps=True)


def test_lrpf_success_keeps_coarse(model, x):
    res = LRPF(model, kappa=0.5, **FAST)(x)
    out, adv = model(x), model(res.x_adv)
    expected = (adv.fine_pred != out.fine_pred) & (adv.coarse_pred == out.coarse_pred)
    assert torch.equal(res.success, expected)
    assert res.success.any()
    assert torch.equal(res.y, out.fine_pred)


def test_results_do_not_depend_on_batch_composition(model, x):
    model, x = float64(model, x)
    whole = LRPF(model, **FAST)(x)
    part = LRPF(model, **FAST)(x[[6, 1, 3]], index=torch.tensor([6, 1, 3]))
    assert torch.equal(whole.x_adv[[6, 1, 3]], part.x_adv)


def test_refresh_every_step_equals_exact_relevance_gradient(model, x):
    a = LRPC(model, refresh=1, lam=1.0, relevance_grad="refresh", **FAST)(x[:4])
    b = LRPC(model, refresh=1, lam=1.0, relevance_grad="exact", **FAST)(x[:4])
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.backwards, b.backwards)


def test_cost_counts_lrp_passes(model, x):
    steps = 3
    base = {"alpha": 1e-4, "steps": steps, "top_k": 0.2}  # tiny steps: nothing flips, all steps run
    plain = LRPC(model, refresh=2, relevance_grad="none", **base)(x[:2])
    assert (
        plain.forwards.tolist() == [steps + 2] * 2 and plain.backwards.tolist() == [steps + 2] * 2
    )
    # with the relevance term on, the differentiable pass adds a double backward
    diff = LRPC(model, refresh=2, lam=1.0, **base)(x[:2])
    assert diff.backwards.tolist() == [steps + 4] * 2


class _Unexplainable(nn.Module):
    def forward(self, t):
        return t * torch.sigmoid(t)


def test_rejects_models_it_cannot_explain(x):
    odd = small_c2f()
    odd.trunk[1] = _Unexplainable()
    calls = []
    odd.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(UserError, match="_Unexplainable"):
        LRPC(odd)(x)
    with pytest.raises(ValueError, match="flat classifier"):
        LRPF(small_cnn(0))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"top_k": 0}, "top_k"), ({"top_k": 1.5}, "top_k"), ({"alpha": 0}, "alpha"),
     ({"steps": 0}, "steps"), ({"refresh": 0}, "refresh"), ({"lam": -1}, "lam"),
     ({"eps": -0.1}, "eps"), ({"relevance_grad": "approx"}, "relevance_grad"),
     ({"mask": "saliency"}, "mask"), ({"search_steps": -1}, "search_steps"),
     ({"memory_format": "nhwc"}, "memory_format")],
)  # fmt: skip
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRPC(small_c2f(), **kwargs)
    with pytest.raises(ValueError, match="kappa"):
        LRPF(small_c2f(), kappa=-1)
