"""FGSM / PGD and the attack base: torchattacks parity, memory formats, per-image determinism,
early stop, first-success steps, minimal eps, stages, input validation and sanity checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from c2f_attacks.attacks import FGSM, PGD, Attack, AttackSanityError
from c2f_attacks.attacks.base import Perturbed
from c2f_attacks.attacks.noise import hash32, uniform_like
from c2f_attacks.data.shapes import SHAPES_HIERARCHY
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig
from tests.conftest import float64, shapes_test, small_c2f, small_cnn

torchattacks = pytest.importorskip("torchattacks")


def tiny_c2f(seed: int = 0) -> C2FVGG16:
    torch.manual_seed(seed)
    cfg = VGGConfig(width=0.0625, input_size=32, batch_norm=True, head_width=32,
                    mean=(0.5,) * 3, std=(0.25,) * 3)  # fmt: skip
    return C2FVGG16(SHAPES_HIERARCHY, cfg).eval()


class StageLogits(nn.Module):
    """One stage of a C2F model as a flat classifier (its logits), for torchattacks."""

    def __init__(self, model: C2FClassifier, stage: str = "coarse"):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, x):
        out = self.model(x)
        return out.coarse_logits if self.stage == "coarse" else out.fine_logits


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 3, 16, 16, generator=g), torch.randint(0, 5, (12,), generator=g)


# ---------------------------------------------------------------- torchattacks parity
# memory_format="contiguous" feeds the model exactly what torchattacks feeds it: bit-identical.
def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("seed,batch_norm", [(0, False), (1, True)])
def test_pgd_contiguous_is_bit_identical_to_torchattacks(batch, seed, batch_norm):
    model = small_cnn(seed, batch_norm)
    x, y = batch
    ref = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False)
    ours = PGD(model, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False,
               memory_format="contiguous")(x, y)  # fmt: skip
    assert torch.equal(ours.x_adv, ref(x, y))


@pytest.mark.parametrize("seed,batch_norm", [(2, False), (3, True)])
def test_fgsm_contiguous_is_bit_identical_to_torchattacks(batch, seed, batch_norm):
    model = small_cnn(seed, batch_norm)
    x, y = batch
    ref = torchattacks.FGSM(model, eps=4 / 255)(x, y)
    assert torch.equal(FGSM(model, eps=4 / 255, memory_format="contiguous")(x, y).x_adv, ref)


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_contiguous_is_bit_identical_to_torchattacks_on_the_shipped_model(shipped, stage):
    """The shipped model flattened to one stage (a flat classifier: loss on y, as torchattacks)."""
    flat = StageLogits(shipped, stage).eval()
    x, y, _ = shapes_test(6)
    y = shipped.fine_to_coarse[y] if stage == "coarse" else y
    ref = torchattacks.PGD(flat, eps=8 / 255, alpha=2 / 255, steps=3, random_start=False)
    ours = PGD(flat, steps=3, random_start=False, memory_format="contiguous")
    assert torch.equal(ours(x, y).x_adv, ref(x, y))
    fgsm = FGSM(flat, memory_format="contiguous")(x, y).x_adv
    assert torch.equal(fgsm, torchattacks.FGSM(flat, eps=8 / 255)(x, y))


class ViewNet(nn.Module):
    """A classic-style CNN that ``.view``s its conv output, so it cannot take channels-last
    batches."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        return self.fc(self.conv(x).relu().view(x.shape[0], -1))


def test_auto_memory_format_is_chosen_per_model_and_returned_as_given(batch):
    x, y = batch
    conv_net, view_net, mlp = (
        small_cnn(0),
        ViewNet().eval(),
        nn.Sequential(nn.Flatten(), nn.Linear(768, 5)),
    )
    for model, fast in ((conv_net, True), (view_net, False), (mlp, False)):
        atk = PGD(model, steps=2, random_start=False)
        res = atk(x, y)
        assert atk._layout.probed == {"cpu": fast}
        assert res.x_adv.is_contiguous()
        ref = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=2, random_start=False)
        assert torch.equal(res.x_adv, ref(channels_last(x) if fast else x, y))
    assert not PGD(conv_net, steps=1)(channels_last(x), y).x_adv.is_contiguous()


def test_memory_format_option(batch):
    """Each format feeds the model its layout; "channels_last" equals torchattacks on
    channels-last input; the option is validated and shown in the repr."""
    model = small_cnn(0)
    seen = []
    model.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x, y = batch
    for memory_format, expect in (("contiguous", False), ("channels_last", True)):
        seen.clear()
        atk = PGD(model, steps=2, random_start=False, memory_format=memory_format)
        res = atk(x, y)
        assert seen and all(s == expect for s in seen)
        assert f"memory_format={memory_format!r}" in repr(atk)
    ref = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=2, random_start=False)
    assert torch.equal(res.x_adv, ref(channels_last(x), y))
    with pytest.raises(ValueError, match="memory_format"):
        PGD(model, memory_format="nhwc")


def test_first_gradient_reuses_the_clean_forward(batch):
    """FGSM: the clean forward carries the gradient pass, so the model runs twice (clean with
    gradient, final), not three times; PGD's random start needs its own clean forward."""
    model = small_cnn(0)
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(torch.is_grad_enabled()))
    x, y = batch
    for attack, expected in (
        (FGSM(model), [True, False]),
        (PGD(model, steps=1), [False, True, False]),
    ):
        attack(x, y)  # the first call also probes the memory layout
        calls.clear()
        attack(x, y)
        assert calls == expected


def test_training_mode_and_grad_flags_restored(batch):
    model = small_cnn(0, batch_norm=True).train()
    model[1].eval()  # a BatchNorm deliberately frozen inside a training model
    model[0].weight.requires_grad_(False)
    PGD(model, steps=2)(*batch)
    assert model.training and not model[1].training and model[0].training
    assert not model[0].weight.requires_grad and model[-1].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- result and cost
def test_result_fields_and_cost(batch):
    model = small_cnn(0)
    x, _ = batch
    res = PGD(model, steps=3)(x)
    with torch.no_grad():
        clean = model(x).argmax(1)
        adv = model(res.x_adv).argmax(1)
    assert torch.equal(res.y, clean) and torch.equal(res.clean.stage, clean)
    assert torch.equal(res.adv.stage, adv)
    assert torch.equal(res.success, adv != clean)
    assert not res.misclassified.any()
    assert res.clean.coarse is None and res.adv.fine is None
    assert res.forwards.tolist() == [3] * 12 and res.backwards.tolist() == [3] * 12
    assert res.cost()["queries_per_image"] == 6
    assert torch.allclose(res.eps, torch.full((12,), 8 / 255))


def test_early_stop_freezes_each_image_at_its_first_success(batch):
    model, x = float64(small_cnn(0), batch[0])  # early stop attacks shrinking batches
    full = PGD(model, eps=0.3, alpha=0.02, steps=20, random_start=False)(x)
    early = PGD(model, eps=0.3, alpha=0.02, steps=20, random_start=False, early_stop=True)(x)
    assert early.success.all()
    # an image that stopped at step t paid t+1 passes and moved less than the full run
    assert (early.forwards <= 20).all() and early.forwards.float().mean() < 20

    def linf(r):
        return (r.x_adv - x).abs().flatten(1).amax(1)

    assert (linf(early) <= linf(full) + 1e-7).all()
    # it took exactly forwards-1 steps of size alpha from x: so its linf is at most that
    assert (linf(early) <= (early.forwards - 1) * 0.02 + 1e-6).all()
    # the step it stopped at: its last forward saw the success after forwards - 1 steps; an
    # image that ran all 20 forwards succeeded at the 20th (step 19) or after the last step
    stopped = early.forwards < 20
    assert torch.equal(early.first_success_step[stopped], early.forwards[stopped] - 1)
    assert torch.isin(early.first_success_step[~stopped], torch.tensor([19, 20])).all()


def test_first_success_step_reruns_to_the_same_image(batch):
    """Running image i for exactly first_success_step[i] steps reproduces its x_adv; the full
    run without early stop records the same steps, and failures get -1."""
    model, x = float64(small_cnn(0), batch[0])  # a batch of 1 against shrinking batches of 12
    kwargs = {"eps": 0.3, "alpha": 0.02, "random_start": False}
    early = PGD(model, steps=8, early_stop=True, **kwargs)(x)
    full = PGD(model, steps=8, **kwargs)(x)
    assert (early.first_success_step[~early.success] == -1).all()
    assert (full.first_success_step[~full.success] == -1).all()
    both = early.success & full.success
    assert torch.equal(early.first_success_step[both], full.first_success_step[both])
    for i in early.success.nonzero().flatten()[:4].tolist():
        steps = int(early.first_success_step[i])
        if steps == 0:
            continue
        again = PGD(model, steps=steps, **kwargs)(x[i : i + 1])
        assert again.success.item()
        assert torch.equal(again.x_adv, early.x_adv[i : i + 1])


def test_margin_loss_lowers_every_margin(batch):
    model = small_cnn(4)
    x, _ = batch
    res = PGD(model, eps=0.3, alpha=0.05, steps=10, loss="margin")(x)

    def margin(images):
        with torch.no_grad():
            z = model(images)
        true = z.gather(1, res.y[:, None]).squeeze(1)
        return true - z.scatter(1, res.y[:, None], float("-inf")).amax(1)

    assert (margin(res.x_adv) < margin(x)).all()
    assert res.success.float().mean() >= 0.5


# ---------------------------------------------------------------- determinism
def test_random_start_depends_only_on_seed_and_global_index(batch):
    model, x = float64(small_cnn(0), batch[0])
    whole = PGD(model, steps=2)(x)
    part = PGD(model, steps=2)(x[4:9], index=torch.arange(4, 9))
    assert torch.equal(whole.x_adv[4:9], part.x_adv)
    shuffled = torch.tensor([7, 2, 11])
    again = PGD(model, steps=2)(x[shuffled], index=shuffled)
    assert torch.equal(whole.x_adv[shuffled], again.x_adv)
    other_seed = PGD(model, steps=2, seed=1)(x)
    assert not torch.allclose(whole.x_adv, other_seed.x_adv)


def test_noise_is_uniform_and_counter_based():
    x = torch.zeros(64, 3, 8, 8)
    u = uniform_like(x, seed=5, index=torch.arange(64))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert torch.equal(u[10:11], uniform_like(x[:1], seed=5, index=torch.tensor([10])))
    values = [0, 1, 12345, 0x7FFFFFFF, 0xFFFFFFFF]
    assert hash32(torch.tensor(values)).tolist() == [_lowbias32(v) for v in values]


def _lowbias32(x: int) -> int:
    """Reference lowbias32 in Python integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


# ---------------------------------------------------------------- minimal eps
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_minimal_eps_finds_smaller_successful_budgets(batch, attack):
    model, x = float64(small_cnn(0), batch[0])  # the search runs shrinking sub-batches
    eps_max = 0.25
    make = (lambda **kw: FGSM(model, eps=eps_max, **kw)) if attack == "fgsm" else (
        lambda **kw: PGD(model, eps=eps_max, alpha=eps_max / 4, steps=5, **kw))  # fmt: skip
    res = make(minimal_eps=True, search_steps=6)(x)
    assert res.success.any()
    found = res.eps[res.success]
    assert (found <= eps_max).all() and (found < eps_max).any()
    linf = (res.x_adv - x).abs().flatten(1).amax(1)
    assert (linf <= res.eps + 1e-6).all()
    # re-running each successful image at its own budget reproduces the success
    one = make()
    for i in res.success.nonzero().flatten()[:3].tolist():
        single = type(one)(model, **_with_eps(one, res.eps[i].item()))(
            x[i : i + 1], index=torch.tensor([i])
        )
        assert single.success.item()
    assert (res.first_success_step[res.success] >= 0).all()


def test_minimal_fgsm_takes_one_gradient_per_image(batch):
    # every run of the search steps from x along the same gradient: the first run's serves all
    model, x = small_cnn(0), batch[0]
    res = FGSM(model, eps=0.25, minimal_eps=True, search_steps=6)(x)
    assert res.success.any()
    assert (res.backwards == 1).all()
    # one forward for that gradient, and one success check per run the image took part in
    assert (res.forwards[res.success] > 2).any()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_pgd_minimal_eps_fools_every_shipped_image_at_64(shipped, stage):
    x, y, _ = shapes_test(16)
    res = PGD(shipped, eps=64 / 255, stage=stage, minimal_eps=True, search_steps=2)(x, y)
    assert res.success.all()
    assert (res.eps <= 64 / 255).all() and (res.eps < 64 / 255).any()
    linf = (res.x_adv - x).abs().flatten(1).amax(1)
    assert (linf <= res.eps + 1e-6).all()


def _with_eps(atk: PGD, eps: float) -> dict:
    if isinstance(atk, FGSM):
        return {"eps": eps}
    return {"eps": eps, "alpha": eps * atk.alpha / atk.eps, "steps": atk.steps}


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "make_x,error,match",
    [
        (
            lambda x: x.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))),
            ValueError,
            "NaN",
        ),
        (
            lambda x: x.clone().index_put_((torch.tensor([0]),), torch.tensor(float("inf"))),
            ValueError,
            "infinite",
        ),
        (lambda x: x * 2, ValueError, r"\[0, 1\]"),
        (lambda x: x[0], ValueError, "shape"),
        (lambda x: x[:, :1], ValueError, "channels"),
        (lambda x: (x * 255).to(torch.uint8), TypeError, "floating"),
        (lambda x: x.numpy(), TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_raise_before_any_work(batch, make_x, error, match):
    model = small_cnn(0)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(error, match=match):
        PGD(model)(make_x(batch[0]))
    assert not calls


def test_stage_must_fit_the_model(batch):
    with pytest.raises(ValueError, match="flat classifier"):
        PGD(small_cnn(0), stage="coarse")
    with pytest.raises(ValueError, match="coarse-to-fine"):
        PGD(tiny_c2f())
    with pytest.raises(ValueError, match="stage must be"):
        FGSM(tiny_c2f(), stage="middle")


@pytest.mark.parametrize(
    "kwargs,match",
    [({"eps": 0}, "eps"), ({"alpha": -1}, "alpha"), ({"steps": 0}, "steps"),
     ({"loss": "l2"}, "loss"), ({"search_steps": -1}, "search_steps")],
)  # fmt: skip
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PGD(small_cnn(0), **kwargs)


def test_bad_labels_and_index(batch):
    x, y = batch
    atk = PGD(small_cnn(0), steps=1)
    with pytest.raises(ValueError, match="lie in"):
        atk(x, y + 10)
    c2f = small_c2f()
    with pytest.raises(ValueError, match="global fine labels"):  # C2F: y are fine labels
        PGD(c2f, stage="coarse")(torch.rand(2, 3, 32, 32), torch.tensor([0, 12]))
    with pytest.raises(TypeError, match="integer"):
        atk(x, y.float())
    with pytest.raises(ValueError, match="shape"):
        atk(x, y[:3])
    with pytest.raises(ValueError, match="shape"):
        atk(x, index=torch.arange(3))
    with pytest.raises(TypeError, match="integer"):
        atk(x, index=torch.zeros(12))


class _Broken(Attack):
    def __init__(self, model, make):
        super().__init__(model)
        self.make = make

    def _perturb(self, batch, counter):
        return Perturbed(*self.make(batch.x))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda x: (x + float("nan"), None), "NaN"),
        (lambda x: (x + 2, None), r"\[0, 1\]"),
        (lambda x: ((x + 0.1).clamp(0, 1), torch.full((x.shape[0],), 0.05)), "exceeds eps"),
    ],
)
def test_sanity_checks_raise(batch, make, match):
    with pytest.raises(AttackSanityError, match=match):
        _Broken(small_cnn(0), make)(batch[0])
