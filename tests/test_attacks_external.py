"""The torchattacks adapter: one attack per family on both stages of the shipped model, counted
queries, our success criterion, and one-line errors."""

from __future__ import annotations

import sys

import pytest
import torch

from c2f_attacks.attacks import PGD, AdvLibAttack, TorchattacksAttack
from tests.conftest import shapes_test, small_c2f

pytest.importorskip("torchattacks")

FAMILIES = {
    "APGD": {"eps": 8 / 255, "steps": 3},  # gradient, l-inf budget
    "DeepFool": {"steps": 5},  # minimum norm
    "OnePixel": {"steps": 2, "popsize": 4},  # sparse
}


@pytest.fixture(scope="module")
def images():
    x, y, _ = shapes_test(3)
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["coarse", "fine"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_one_attack_per_family_on_both_stages(shipped, images, name, stage):
    x, y = images
    atk = TorchattacksAttack(shipped, name, stage, **FAMILIES[name])
    res = atk(x, y)
    assert atk.name == f"torchattacks:{name}"
    with torch.no_grad():
        clean, adv = shipped(x), shipped(res.x_adv)
    # success recomputed from x_adv with the stage's criterion (fine: fine changed, any)
    field = "coarse_pred" if stage == "coarse" else "fine_pred"
    assert torch.equal(res.success, getattr(adv, field) != getattr(clean, field))
    assert torch.equal(res.y, getattr(clean, field))
    assert (res.queries > 0).all() and (res.first_success_step == -1).all()
    if name == "APGD":  # the l-inf budget is enforced by the sanity check and reported
        assert torch.allclose(res.eps, torch.full((3,), 8 / 255))
        assert ((res.x_adv - x).abs().flatten(1).amax(1) <= 8 / 255 + 1e-6).all()
    else:
        assert res.eps is None


def test_queries_and_result_match_our_pgd(shipped, images):
    """torchattacks.PGD through the adapter: one forward and one backward per step and image,
    and (coarse stage, no random start) the very images our contiguous PGD makes."""
    x, y = images
    res = TorchattacksAttack(shipped, "PGD", "coarse", steps=3, random_start=False)(x, y)
    assert res.forwards.tolist() == [3] * 3 and res.backwards.tolist() == [3] * 3
    ours = PGD(shipped, stage="coarse", steps=3, random_start=False, memory_format="contiguous")
    assert torch.equal(res.x_adv, ours(x, y).x_adv)


def test_model_state_and_modes_are_left_alone(images):
    """torchattacks calls model.train() after an attack on a model it found in training mode;
    the wrapper must not be one, or the model's BatchNorm statistics drift."""
    model = small_c2f(3)
    model.trunk.insert(1, torch.nn.BatchNorm2d(8).eval())  # running statistics to protect
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.nn.functional.interpolate(images[0], size=32)
    TorchattacksAttack(model, "PGD", "coarse", steps=2)(x)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())


def test_n_classes_defaults_to_the_stage(shipped):
    assert TorchattacksAttack(shipped, "FAB", "coarse").attack.n_target_classes == 3
    assert TorchattacksAttack(shipped, "FAB", "fine").settings["n_classes"] == 12
    assert "n_classes=5" in repr(TorchattacksAttack(shipped, "FAB", "fine", n_classes=5))


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_errors_are_one_clear_line(shipped, images, monkeypatch):
    with pytest.raises(ValueError, match="unknown torchattacks attack 'PGDX'") as err:
        TorchattacksAttack(shipped, "PGDX", "coarse")
    _one_line(err)
    with pytest.raises(ValueError, match="cannot be built") as err:
        TorchattacksAttack(shipped, "PGD", "coarse", radius=3)
    _one_line(err)
    with pytest.raises(ValueError, match=r"norm='L7' is not a norm") as err:
        TorchattacksAttack(shipped, "APGD", "coarse", norm="L7")(*images)
    _one_line(err)
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install c2f-attacks\[baselines\]") as err:
        TorchattacksAttack(shipped, "PGD", "coarse")
    _one_line(err)


def test_minimal_search_of_a_budgeted_external_attack_is_our_bisection(shipped, images):
    """torchattacks takes one eps per call: each bisection round calls it once per distinct
    trial budget (its other settings, the step size included, as given); every image ends at a
    budget that succeeded, one resolution step above one that failed, and inside it. One image
    per call, so that the check below runs on the batch the search ran (a conv's float rounding
    depends on the batch, and an image on the boundary can tip either way)."""
    x, _ = images
    settings = {"alpha": 8 / 255, "steps": 4, "random_start": False}
    step = 32 / 255 / 8  # the resolution of 3 halvings of 32/255
    for i in range(len(x)):
        one = x[i : i + 1]
        res = TorchattacksAttack(shipped, "PGD", "coarse", eps=32 / 255, minimal_eps=True,
                                 search_steps=3, **settings)(one)  # fmt: skip
        eps = res.eps.item()
        assert res.success.item() and (res.x_adv - one).abs().max() <= eps + 1e-6
        assert min(abs(eps - k * step) for k in range(1, 9)) < 1e-6  # a budget the search tries
        if eps > step + 1e-6:
            below = TorchattacksAttack(shipped, "PGD", "coarse", eps=eps - step, **settings)(one)
            assert not below.success.item()


def test_adv_lib_attacks_run_on_both_stages_with_their_norms(shipped, images):
    pytest.importorskip("adv_lib")
    x, y = images
    for stage in ("coarse", "fine"):
        res = AdvLibAttack(shipped, "fmn", stage, norm=0, steps=20)(x, y)
        assert res.eps is None and (res.queries > 0).all()
        changed = (res.x_adv - x).abs().amax(1).flatten(1) > 1e-6
        assert (changed.float().mean(1) < 1).all()  # an l0 attack leaves most pixels alone
    apgd = AdvLibAttack(shipped, "apgd", "coarse", eps=4 / 255, n_iter=5)(x, y)
    assert torch.allclose(apgd.eps, torch.full((3,), 4 / 255))
    minimal = AdvLibAttack(
        shipped, "apgd", "coarse", eps=32 / 255, n_iter=5, minimal_eps=True, search_steps=2
    )(x, y)  # one call per round: budgets per image
    assert ((minimal.x_adv - x).abs().flatten(1).amax(1) <= minimal.eps + 1e-6).all()
    with pytest.raises(ValueError, match="adv_lib:fmn has no setting 'radius'"):
        AdvLibAttack(shipped, "fmn", "coarse", radius=1)
    with pytest.raises(ValueError, match="searches its own minimal perturbation"):
        AdvLibAttack(shipped, "fmn", "coarse", minimal_eps=True)


def test_linf_cap_holds_an_l0_attack_inside_the_ball(shipped, images, monkeypatch):
    """The library attacks box coordinates z: every pixel stays within the cap of x, a pixel
    the library left alone is exactly x's, and a pixel changes in x' exactly where it changed
    in z, so the l0 the library minimises is the l0 measured."""
    pytest.importorskip("adv_lib")
    x, y = images
    seen = {}
    run = AdvLibAttack._run

    def spy(self, inputs, labels, settings, target):
        seen["z"], seen["z_adv"] = inputs.clone(), run(self, inputs, labels, settings, target)
        return seen["z_adv"]

    monkeypatch.setattr(AdvLibAttack, "_run", spy)
    cap = 8 / 255
    res = AdvLibAttack(shipped, "sigma_zero", "coarse", linf_cap=cap, num_steps=100)(x, y)
    assert ((res.x_adv - x).abs() <= cap + 1e-6).all()
    assert ((seen["z"] >= 0) & (seen["z"] <= 1)).all()  # the ball, as the library's box
    changed_z = seen["z_adv"] != seen["z"]
    assert res.success.any() and changed_z.any()
    assert torch.equal(res.x_adv != x, changed_z)
    with torch.no_grad():  # success is judged on the images, not on z
        assert torch.equal(res.success, shipped(res.x_adv).coarse_pred != res.clean.coarse)
    uncapped = AdvLibAttack(shipped, "sigma_zero", "coarse", num_steps=100)(x, y)
    assert (uncapped.x_adv - x).abs().max() > cap  # the cap is what kept the first one inside


def test_linf_cap_refusals(shipped, images, monkeypatch):
    pytest.importorskip("adv_lib")
    x, y = images
    with pytest.raises(ValueError, match="linf_cap is for l0 attacks; this one measures l2"):
        AdvLibAttack(shipped, "ddn", "coarse", linf_cap=0.1)
    with pytest.raises(ValueError, match="linf_cap must be a positive number, got -1"):
        AdvLibAttack(shipped, "sigma_zero", "coarse", linf_cap=-1)
    with pytest.raises(ValueError, match="vfga calls the model on parts of a batch"):
        AdvLibAttack(shipped, "vfga", "coarse", linf_cap=0.1)

    def one_image_at_a_time(self, inputs, labels, settings, target):
        for i in range(len(inputs)):
            self.stage_model(inputs[i : i + 1])
        return inputs

    monkeypatch.setattr(AdvLibAttack, "_run", one_image_at_a_time)
    with pytest.raises(ValueError, match="called the model on 1 images of a batch of 3"):
        AdvLibAttack(shipped, "sigma_zero", "coarse", linf_cap=0.1)(x, y)
