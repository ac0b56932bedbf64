"""The torchattacks adapter: one attack per family on both stages of the shipped model, counted
queries, our success criterion, and one-line errors."""

from __future__ import annotations

import sys

import pytest
import torch

from c2f_attacks.attacks import PGD, TorchattacksAttack
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
    assert atk.name == f"torchattacks.{name}"
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
    assert TorchattacksAttack(shipped, "FAB", "fine").kwargs["n_classes"] == 12
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
    with pytest.raises(ValueError, match=r"torchattacks.APGD cannot run .* 4 classes") as err:
        TorchattacksAttack(shipped, "APGD", "coarse", norm="L7")(*images)
    _one_line(err)
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install c2f-attacks\[baselines\]") as err:
        TorchattacksAttack(shipped, "PGD", "coarse")
    _one_line(err)
