"""Attack speed: our PGD vs torchattacks' PGD, and one LRPC/LRPF step vs one PGD step.

Both ratios are measured in one run on the same model and batch (the shipped shapes-vgg16).
``pytest bench --benchmark`` records them in results/bench_ratios.json.
"""

from __future__ import annotations

import pytest
import torch
import torchattacks

from bench.conftest import CoarseLogits, interleaved_medians, median_time
from c2f_attacks.attacks import LRPC, LRPF, PGD
from c2f_attacks.attacks.layout import prefers_channels_last
from c2f_attacks.attacks.lrp_guided import SHARED_DEFAULTS
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.models import load_model

STEPS = SHARED_DEFAULTS["refresh"]  # one full mask-refresh cycle of the LRP attacks


@pytest.fixture(scope="module")
def setup(full_size):
    n = 64 if full_size else 4
    x, _, _ = ShapesC2F(n, SHAPES_SPLITS["test"]).tensors()
    return load_model("shapes-vgg16"), x, (5 if full_size else 1)


def test_pgd_vs_torchattacks(setup, record_ratio, full_size, benchmark):
    """Both attacks called on the same (contiguous) batch, as a user calls them. Ours hands the
    CPU model channels-last batches by default (c2f_attacks/attacks/layout.py); the other ratios
    compare in one layout (ours with memory_format="contiguous", bit-identical to torchattacks;
    torchattacks on channels-last input), which leaves the work ours does beyond its steps: the
    forward that decides per-image success."""
    model, x, repeats = setup
    steps = 10 if full_size else 2
    flat = CoarseLogits(model).eval()
    y = model(x).coarse_pred
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ours = PGD(flat, steps=steps, random_start=False)
    ours_contiguous = PGD(flat, steps=steps, random_start=False, memory_format="contiguous")
    theirs = torchattacks.PGD(flat, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=False)
    assert prefers_channels_last(flat, x)
    assert torch.allclose(ours(x, y).x_adv, theirs(x_cl, y), atol=1e-6)  # same arithmetic
    assert torch.equal(ours_contiguous(x, y).x_adv, theirs(x, y))
    t_ours, t_theirs, t_theirs_cl, t_contiguous = interleaved_medians(
        [lambda: ours(x, y), lambda: theirs(x, y), lambda: theirs(x_cl, y),
         lambda: ours_contiguous(x, y)],
        repeats,
    )  # fmt: skip
    details = {
        "batch": x.shape[0],
        "steps": steps,
        "ours_s": t_ours,
        "ours_contiguous_s": t_contiguous,
        "torchattacks_s": t_theirs,
        "torchattacks_channels_last_s": t_theirs_cl,
    }
    record_ratio("pgd_ours_over_torchattacks", t_ours / t_theirs, goal="<= 1.0", **details)
    record_ratio(
        "pgd_ours_contiguous_over_torchattacks",
        t_contiguous / t_theirs,
        goal="none: both contiguous, bit-identical outputs, ours adds the success forward",
        **details,
    )
    record_ratio(
        "pgd_ours_over_torchattacks_channels_last",
        t_ours / t_theirs_cl,
        goal="none: same layout for both, ours adds the success forward",
        **details,
    )
    print(
        f"\nPGD {steps} steps, batch {x.shape[0]}: ours {t_ours:.3f}s, torchattacks "
        f"{t_theirs:.3f}s, on channels-last input {t_theirs_cl:.3f}s -> ours/theirs = "
        f"{t_ours / t_theirs:.2f} ({t_ours / t_theirs_cl:.2f})"
    )
    benchmark.pedantic(lambda: ours(x, y), rounds=1, iterations=1)


@pytest.mark.parametrize("attack", [LRPC, LRPF])
def test_lrp_step_vs_pgd_step(setup, record_ratio, attack, benchmark):
    """Per-step time over one refresh cycle (one differentiable LRP pass + ``refresh`` margin
    gradients).
    A tiny alpha keeps every image active for all steps, so both runs do the same work per step."""
    model, x, repeats = setup
    (stage,) = attack.stages
    pgd = PGD(model, alpha=1e-4, steps=STEPS, random_start=False, stage=stage)
    lrp_attack = attack(model, alpha=1e-4, steps=STEPS)
    res = lrp_attack(x)
    assert not res.success.any() and (res.forwards == STEPS + 1).all()
    t_pgd = median_time(lambda: pgd(x), repeats)
    t_lrp = median_time(lambda: lrp_attack(x), repeats)
    record_ratio(f"{attack.__name__.lower()}_step_over_pgd_step", t_lrp / t_pgd, goal="<= 2.5",
                 batch=x.shape[0], steps=STEPS, refresh=lrp_attack.refresh,
                 relevance_grad=lrp_attack.relevance_grad, pgd_s=t_pgd, lrp_s=t_lrp)  # fmt: skip
    benchmark.pedantic(lambda: lrp_attack(x), rounds=1, iterations=1)
