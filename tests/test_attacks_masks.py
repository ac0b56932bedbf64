"""Mask sources of LRPC / LRPF: where each one lets the attack perturb, what it costs, the
relevance term with a non-LRP mask, determinism of the random mask, and the controls on the
shipped model."""

from __future__ import annotations

import pytest
import torch

from c2f_attacks.attacks import LRPC, LRPF, MASK_SOURCES
from c2f_attacks.attacks.noise import uniform_like
from c2f_attacks.lrp.explain import heatmap, stage_relevance_of, top_fraction_mask
from tests.conftest import float64, shapes_test

FAST = {"alpha": 0.05, "steps": 8, "top_k": 0.2}
TINY = {"alpha": 1e-4, "steps": 4, "top_k": 0.2}  # nothing flips: every image runs every step


@pytest.fixture(scope="module")
def x():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def object_mask():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = (yy - 16) ** 2 + (xx - 14) ** 2 < 81
    return disc.expand(6, 32, 32).clone()


def expected_mask(name, model, x, object_mask, seed=0):
    """Each source's formula, computed here independently, at the clean images."""
    k = FAST["top_k"]
    target = model(x).coarse_pred
    if name in ("lrp", "least_relevant"):
        heat = heatmap(stage_relevance_of(model, x, "coarse", target))
        return top_fraction_mask(heat if name == "lrp" else -heat, k)
    if name in ("gradient", "gradient_x_input"):
        xg = x.clone().requires_grad_(True)
        logits = model(xg).coarse_logits
        true = logits.gather(1, target[:, None]).squeeze(1)
        margin = true - logits.scatter(1, target[:, None], float("-inf")).amax(1)
        (grad,) = torch.autograd.grad(margin.sum(), xg)
        score = grad.abs().sum(1) if name == "gradient" else (x * grad).sum(1)
        return top_fraction_mask(score, k)
    noise = uniform_like(x[:, :1], seed, torch.arange(len(x)))[:, 0]
    if name == "random":
        return top_fraction_mask(noise, k)
    if name == "random_object":  # k random pixels among the object's (each image's disc > k)
        return top_fraction_mask(torch.where(object_mask, noise, noise - 2), k) & object_mask
    return object_mask


@pytest.mark.parametrize("name", MASK_SOURCES.names())
def test_each_source_perturbs_only_its_own_pixels(model, x, object_mask, name):
    # one mask for the whole run (refresh >= steps): every changed pixel lies inside it (the
    # maps recomputed here in another memory layout than the attack's: float64, so that
    # rounding cannot move a pixel across the top-k cut)
    model, x = float64(model, x)
    res = LRPC(model, mask=name, refresh=FAST["steps"], **FAST)(x, object_mask=object_mask)
    changed = (res.x_adv - x).abs().amax(dim=1) > 0
    mask = expected_mask(name, model, x, object_mask)
    assert changed.any()
    assert not (changed & ~mask).any()
    if name != "object":  # at most k of the pixels; changed ones can only be fewer
        assert (changed.flatten(1).sum(1) <= mask.flatten(1).sum(1)).all()


def test_random_mask_is_reproducible_and_independent_of_the_batch(model, x):
    model, x = float64(model, x)
    whole = LRPF(model, mask="random", **FAST)(x)
    assert torch.equal(whole.x_adv, LRPF(model, mask="random", **FAST)(x).x_adv)
    rows = torch.tensor([4, 1, 2])
    part = LRPF(model, mask="random", **FAST)(x[rows], index=rows)
    assert torch.equal(whole.x_adv[rows], part.x_adv)
    other = LRPF(model, mask="random", seed=1, **FAST)(x)
    assert not torch.equal(whole.x_adv, other.x_adv)


@pytest.mark.parametrize(
    "name,lam,forwards,backwards",
    [
        # 4 steps, refresh=2: 4 margin gradients + 2 refreshes (steps 0 and 2)
        ("lrp", 0.0, 4 + 2, 4 + 2),  # one LRP pass per refresh
        ("lrp", 1.0, 4 + 2, 4 + 2 * 2),  # the same pass, differentiable: one more backward
        ("gradient", 0.0, 4 + 2, 4 + 2),  # one margin gradient per refresh
        ("gradient", 1.0, 4 + 2 * 2, 4 + 2 + 2 * 2),  # and the relevance term's LRP pass
        ("random", 0.0, 4, 4),  # no model call for the mask
        ("random", 1.0, 4 + 2, 4 + 2 * 2),  # the relevance term's LRP pass only
        ("object", 0.0, 4, 4),
    ],
)  # fmt: skip
def test_queries_count_every_mask_pass(model, x, object_mask, name, lam, forwards, backwards):
    res = LRPC(model, mask=name, lam=lam, refresh=2, **TINY)(x[:2], object_mask=object_mask[:2])
    assert not res.success.any()
    assert res.forwards.tolist() == [forwards] * 2
    assert res.backwards.tolist() == [backwards] * 2


def test_relevance_term_acts_on_the_masked_pixels_of_any_source(model, x):
    """With a non-LRP mask the relevance term still lowers the LRP relevance of t on the masked
    pixels: it changes the steps (lam > 0) and is off with lam = 0."""
    off = LRPC(model, mask="random", lam=0.0, **FAST)(x)
    on = LRPC(model, mask="random", lam=100.0, **FAST)(x)
    none = LRPC(model, mask="random", lam=100.0, relevance_grad="none", **FAST)(x)
    assert not torch.equal(off.x_adv, on.x_adv)
    assert torch.equal(off.x_adv, none.x_adv)
    # same pixels either way: the term changes the step signs, not the mask
    for res in (off, on):
        changed = (res.x_adv - x).abs().amax(dim=1) > 0
        assert not (changed & ~expected_mask("random", model, x, None)).any()


def test_object_mask_fails_clearly_without_masks(model, x):
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="object_mask"):
            LRPC(model, mask="object")(x)
        with pytest.raises(ValueError, match="shape"):
            LRPC(model, mask="object")(x, object_mask=torch.ones(6, 16, 16, dtype=torch.bool))
    finally:
        handle.remove()
    assert not calls


def test_unknown_mask_name(model):
    with pytest.raises(ValueError, match="unknown mask source 'saliency'; choose from lrp"):
        LRPF(model, mask="saliency")


def test_random_object_mask_stays_on_the_object(model, x, object_mask):
    small = object_mask.clone()
    small[:, :, 20:] = False  # a part of the disc, still larger than k of the image
    mask = expected_mask("random_object", model, x, small)
    assert not (mask & ~small).any()
    assert (mask.flatten(1).sum(1) == torch.ceil(torch.tensor(0.2 * 32 * 32))).all()
    tiny = torch.zeros_like(object_mask)
    tiny[:, 10:12, 10:12] = True  # an object smaller than k: all of it
    assert torch.equal(expected_mask("random_object", model, x, tiny), tiny)


@pytest.mark.slow
def test_least_relevant_fools_less_than_lrp_on_the_shipped_model(shipped):
    x, _, _ = shapes_test(12)
    settings = {"steps": 40, "top_k": 0.15}
    lrp = LRPC(shipped, mask="lrp", **settings)(x)
    least = LRPC(shipped, mask="least_relevant", **settings)(x)
    assert lrp.success.float().mean() >= 0.9
    assert least.success.float().mean() < lrp.success.float().mean() - 0.3
    l0 = ((lrp.x_adv - x).abs().amax(dim=1) > 0).flatten(1).float().mean(1)
    assert (l0 <= 0.25).all()  # sparse: within the refreshed top-15% masks
