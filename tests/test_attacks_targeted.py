"""Targeted attacks: the target_reached rule, target policies, torchattacks parity, LRPC/LRPF's
targeted form, external targeted modes and bad targets (the consistent fine view they read the
fine stage through is tested in test_consistent_view.py)."""

import pytest
import torch
from torch import nn

from c2f_attacks import Hierarchy
from c2f_attacks.attacks import (
    FGSM,
    LRPC,
    LRPF,
    PGD,
    Predictions,
    TargetReached,
    choose_targets,
    consistent_fine_logits,
    create_attack,
    get_criterion,
)
from c2f_attacks.attacks.stage import StageView
from c2f_attacks.errors import UserError
from c2f_attacks.models.base import C2FClassifier
from tests.conftest import TOY_TREE, small_c2f, small_cnn

torchattacks = pytest.importorskip("torchattacks")


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 3, 16, 16, generator=g), torch.randint(0, 5, (12,), generator=g)


def other_class(model: nn.Module, x: torch.Tensor, classes: int) -> torch.Tensor:
    """A target per image that is not the flat model's clean prediction."""
    with torch.no_grad():
        return (model(x).argmax(1) + 1 + torch.arange(len(x)) % (classes - 1)) % classes


GROUPS = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"], "d": ["d1", "d2", "d3"]}


# ----------------------------------------------------------------- the target_reached rule
def test_target_reached_compares_the_stage_prediction_with_the_targets():
    clean = Predictions(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]))
    adv = Predictions(torch.tensor([2, 1, 0]), torch.tensor([1, 0, 0]), torch.tensor([2, 1, 0]))
    rule = TargetReached("fine", torch.tensor([2, 0, 1]))
    assert rule(clean, adv).tolist() == [True, False, False]
    assert rule[torch.tensor([0, 2])](clean[torch.tensor([0, 2])], adv[[0, 2]]).tolist() == [
        True,
        False,
    ]
    unbound = get_criterion("target_reached", "coarse")
    assert unbound.targeted and unbound.name == "target_reached"
    with pytest.raises(UserError, match="needs the requested classes"):
        unbound(clean, adv)
    # the attacked stage's prediction (Predictions.stage) is what a rule compares
    assert unbound.aimed_at(torch.tensor([1, 1, 1]))(clean, adv).tolist() == [False, True, False]
    # a row's rule from its name and its records' target_class
    from_records = get_criterion("target_reached", "fine", target=torch.tensor([2, 0, 1]))
    assert from_records(clean, adv).tolist() == [True, False, False]
    assert get_criterion("stage_changed", "fine", target=torch.tensor([2, 0, 1])).name == (
        "stage_changed"
    )


# ----------------------------------------------------------------- torchattacks parity
@pytest.mark.parametrize("seed,batch_norm", [(0, False), (1, True)])
def test_targeted_pgd_and_fgsm_are_bit_identical_to_torchattacks(batch, seed, batch_norm):
    model = small_cnn(seed, batch_norm)
    x, y = batch
    target = other_class(model, x, 5)
    ref = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False)
    ref.set_mode_targeted_by_label(quiet=True)
    ours = PGD(model, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False,
               memory_format="contiguous")(x, y, target=target)  # fmt: skip
    assert torch.equal(ours.x_adv, ref(x, target))
    assert ours.criterion.name == "target_reached" and torch.equal(ours.target, target)
    assert torch.equal(ours.success, ours.adv.stage == target)
    fgsm = torchattacks.FGSM(model, eps=4 / 255)
    fgsm.set_mode_targeted_by_label(quiet=True)
    mine = FGSM(model, eps=4 / 255, memory_format="contiguous")(x, y, target=target)
    assert torch.equal(mine.x_adv, fgsm(x, target))


# ----------------------------------------------------------------- bad targets
class NoCalls(nn.Module):
    """A flat model that fails the test when it is called."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        raise AssertionError("the model was called")


class NoCallsC2F(C2FClassifier):
    def __init__(self):
        super().__init__(Hierarchy.from_dict(GROUPS))
        self.conv = nn.Conv2d(3, 2, 1)

    def logits(self, x):
        raise AssertionError("the model was called")


@pytest.mark.parametrize(
    "stage,target,error,match",
    [
        ("coarse", torch.tensor([0, 4]), UserError, "target of image 1 is 4, outside the coarse "
         "stage's coarse indices 0..3"),
        ("fine", torch.tensor([-1, 2]), UserError, "target of image 0 is -1, outside the fine "
         "stage's global fine indices 0..8"),
        ("fine", torch.tensor([1, 2, 3]), UserError, r"target must have shape \(2,\)"),
        ("fine", torch.tensor([1.0, 2.0]), UserError, "integer tensor of global fine indices"),
        ("coarse", [1, 2], UserError, "a policy .* or a tensor of coarse indices, got list"),
        ("coarse", "closest", UserError, "unknown target policy 'closest'"),
    ],
)  # fmt: skip
def test_bad_targets_are_refused_before_any_model_call(stage, target, error, match):
    atk = PGD(NoCallsC2F(), stage=stage, memory_format="contiguous")
    with pytest.raises(error, match=match):
        atk(torch.rand(2, 3, 8, 8), target=target)


def test_flat_models_refuse_hierarchy_policies_and_a_targeted_rule_needs_targets():
    with pytest.raises(UserError, match="'nearest' needs a hierarchy"):
        PGD(NoCalls(), memory_format="contiguous")(torch.rand(2, 3, 8, 8), target="nearest")
    with pytest.raises(UserError, match="needs the requested classes: call atk"):
        PGD(NoCalls(), criterion="target_reached")(torch.rand(2, 3, 8, 8))


def test_a_target_equal_to_the_clean_decision_is_refused_naming_the_image(batch):
    model = small_c2f(0)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = model(x).fine_pred
    target = (clean + 1) % 12
    target[2] = clean[2]
    with pytest.raises(UserError, match=f"target of image 2 is {int(clean[2])}, which the "
                                         "fine stage already decides"):  # fmt: skip
        PGD(model, stage="fine")(x, target=target)
    flat = small_cnn(0)
    xf, _ = batch
    with pytest.raises(UserError, match="target of image 0 is 5, outside the flat stage"):
        PGD(flat)(xf, target=torch.full((12,), 5))


class LogitsC2F(C2FClassifier):
    """Its logits are read off the image: coarse from row 0, fine from row 1 (scaled)."""

    input_size = None

    def __init__(self, hierarchy: Hierarchy):
        super().__init__(hierarchy)
        self.in_channels = 1
        self.scale = nn.Parameter(torch.tensor(10.0))

    def logits(self, x):
        m, k = self.hierarchy.num_coarse, self.hierarchy.num_fine
        return self.scale * x[:, 0, 0, :m], self.scale * x[:, 0, 1, :k]


def policy_targets(policy, model, stage, x, index, seed=0):
    view = StageView(model, stage)
    with torch.no_grad():
        logits, clean, out = view.forward(x)
    return choose_targets(policy, view, logits, out, clean, index, seed), clean


def test_policies_never_pick_the_clean_decision_and_follow_the_tree():
    model = LogitsC2F(Hierarchy.from_dict(TOY_TREE))
    x = torch.rand(300, 1, 2, 6, generator=torch.Generator().manual_seed(3))
    index = torch.arange(300)
    h = model.hierarchy
    for stage in ("coarse", "fine"):
        for policy in ("random", "least_likely", "nearest", "farthest"):
            target, clean = policy_targets(policy, model, stage, x, index)
            assert (target != clean.stage).all(), (stage, policy)
    near, clean = policy_targets("nearest", model, "fine", x, index)
    far, _ = policy_targets("farthest", model, "fine", x, index)
    every = torch.arange(h.num_fine)
    distance = h.severity(clean.fine[:, None], every[None, :]).masked_fill(
        every[None, :] == clean.fine[:, None], 99
    )
    assert torch.equal(h.severity(clean.fine, near), distance.amin(1))
    assert torch.equal(
        h.severity(clean.fine, far), distance.masked_fill(distance == 99, -1).amax(1)
    )
    # the coarse stage: pet's nearest is wild (they share 'animal'), vehicle is the farthest
    pet, wild, vehicle = range(3)
    near, clean = policy_targets("nearest", model, "coarse", x, index)
    far, _ = policy_targets("farthest", model, "coarse", x, index)
    assert near[clean.coarse == pet].eq(wild).all() and far[clean.coarse == pet].eq(vehicle).all()
    assert torch.isin(near[clean.coarse == vehicle], torch.tensor([pet, wild])).all()
    # every candidate is drawn: random reaches all other fine classes
    target, clean = policy_targets("random", model, "fine", x, index)
    assert set(target.tolist()) == set(range(h.num_fine))


def test_least_likely_is_the_lowest_decision_logit():
    model = LogitsC2F(Hierarchy.from_dict(GROUPS))
    x = torch.rand(50, 1, 2, 9, generator=torch.Generator().manual_seed(4))
    target, _ = policy_targets("least_likely", model, "fine", x, torch.arange(50))
    with torch.no_grad():
        out = model(x)
    view = consistent_fine_logits(out.coarse_logits, out.fine_logits, model.fine_to_coarse,
                                  out.fine_pred)  # fmt: skip
    assert torch.equal(target, view.argmin(1))
    target, _ = policy_targets("least_likely", model, "coarse", x, torch.arange(50))
    assert torch.equal(target, out.coarse_logits.argmin(1))


def test_policy_targets_depend_on_seed_and_image_index_only():
    """Two-level hierarchy: coarse nearest and farthest draw exactly as random does."""
    model = LogitsC2F(Hierarchy.from_dict(GROUPS))
    x = torch.rand(40, 1, 2, 9, generator=torch.Generator().manual_seed(5))
    index = torch.arange(100, 140)
    for policy in ("random", "nearest", "farthest"):
        whole, _ = policy_targets(policy, model, "fine", x, index)
        parts = torch.cat([policy_targets(policy, model, "fine", x[i : i + 7], index[i : i + 7])[0]
                           for i in range(0, 40, 7)])  # fmt: skip
        assert torch.equal(whole, parts)
        other_seed, _ = policy_targets(policy, model, "fine", x, index, seed=1)
        assert not torch.equal(whole, other_seed)
    coarse = [policy_targets(p, model, "coarse", x, index)[0]
              for p in ("random", "nearest", "farthest")]  # fmt: skip
    assert torch.equal(coarse[0], coarse[1]) and torch.equal(coarse[0], coarse[2])


# ----------------------------------------------------------------- targeted attacks on C2F
@pytest.fixture(scope="module")
def images():
    return torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_targeted_pgd_success_is_reaching_the_target_and_stops_there(images, stage):
    model = small_c2f(1)
    atk = PGD(model, stage=stage, eps=0.3, alpha=0.05, steps=15, early_stop=True)
    res = atk(images, target="random")
    assert torch.equal(res.success, res.adv.stage == res.target)
    # frozen at the first iterate seen at its target: no forward after that one
    seen = res.success & (res.first_success_step < 15)
    assert seen.any()  # a budget of 0.3 reaches some targets within the steps
    assert (res.forwards[seen] == res.first_success_step[seen] + 1).all()


def test_targeted_minimal_eps_searches_the_budget_of_the_target(images):
    model = small_c2f(1)
    target, _ = policy_targets("nearest", model, "fine", images, torch.arange(8))
    res = PGD(model, stage="fine", eps=0.3, alpha=0.05, steps=15, early_stop=True,
              minimal_eps=True, search_steps=4)(images, target=target)  # fmt: skip
    assert torch.equal(res.success, res.adv.fine == target)
    linf = (res.x_adv - images).abs().flatten(1).amax(1)
    assert (linf[res.success] <= res.eps[res.success] + 1e-6).all()
    assert (res.eps[res.success] < 0.3).any()  # the search went below the bound


def test_targeted_lrpc_and_lrpf_reach_their_targets_by_their_definitions(images):
    model = small_c2f(1)
    settings = dict(eps=0.3, steps=30, refresh=10, alpha=0.02)
    coarse = LRPC(model, **settings)(images, target="random")
    assert torch.equal(coarse.success, coarse.adv.coarse == coarse.target)
    assert coarse.success.any()
    near = LRPF(model, **settings)(images, target="nearest")  # inside the superclass
    assert torch.equal(near.success, near.adv.fine == near.target)
    assert (near.adv.coarse[near.success] == near.clean.coarse[near.success]).all()
    far = LRPF(model, **settings)(images, target="farthest")  # the hinge moves the coarse class
    assert torch.equal(far.success, far.adv.fine == far.target)
    assert (far.adv.coarse[far.success] == model.fine_to_coarse[far.target[far.success]]).all()
    assert near.success.any() and far.success.any()


# ----------------------------------------------------------------- external adapters
def test_torchattacks_targeted_mode_and_attacks_without_one():
    model = small_c2f(1)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    atk = create_attack("torchattacks:PGD", model, stage="fine", eps=0.3, alpha=0.05, steps=10)
    assert atk.targetable
    target, _ = policy_targets("farthest", model, "fine", x, torch.arange(6))
    res = atk(x, target=target)
    assert res.criterion.name == "target_reached"
    assert torch.equal(res.success, res.adv.fine == target) and res.success.any()
    deepfool = create_attack("torchattacks:DeepFool", NoCallsC2F(), stage="fine")
    assert not deepfool.targetable
    with pytest.raises(UserError, match="torchattacks:DeepFool has no targeted mode"):
        deepfool(torch.rand(2, 3, 8, 8), target="random")


def test_adv_lib_targeted_mode():
    pytest.importorskip("adv_lib")
    model = small_c2f(1)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    atk = create_attack("adv_lib:fmn", model, stage="coarse", steps=20)
    res = atk(x, target="random")
    assert torch.equal(res.success, res.adv.coarse == res.target) and res.success.any()
    with pytest.raises(UserError, match="targeted=True is not a setting"):
        create_attack("adv_lib:fmn", model, stage="coarse", targeted=True)


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_targeted_fgsm_and_torchattacks_fab_judge_by_the_target(images, stage):
    model = small_c2f(1)
    target, _ = policy_targets("random", model, stage, images, torch.arange(8))
    fgsm = FGSM(model, stage=stage, eps=0.3)(images, target=target)
    assert torch.equal(fgsm.success, fgsm.adv.stage == target)
    fab = create_attack("torchattacks:FAB", model, stage=stage, steps=20)
    assert fab.targetable
    res = fab(images, target=target)
    assert res.criterion.name == "target_reached" and torch.equal(res.target, target)
    assert torch.equal(res.success, res.adv.stage == target) and res.success.any()


def test_adv_lib_attacks_whose_targeted_mode_does_nothing_refuse_targets():
    pytest.importorskip("adv_lib")
    for name in ("df", "sdf", "fab", "sigma_zero"):
        atk = create_attack(f"adv_lib:{name}", NoCallsC2F(), stage="coarse")
        assert not atk.targetable
        with pytest.raises(UserError, match=f"adv_lib:{name} has no targeted mode"):
            atk(torch.rand(2, 3, 8, 8), target=torch.tensor([0, 1]))


def test_a_clean_target_is_refused_after_the_clean_forward_only():
    model = small_c2f(0)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        clean = model(x).coarse_pred
    calls.clear()
    with pytest.raises(UserError, match=f"target of image 0 is {int(clean[0])}, which the "
                                        "coarse stage already decides"):  # fmt: skip
        PGD(model, stage="coarse", memory_format="contiguous")(x, target=clean.clone())
    assert len(calls) == 1  # the clean forward, no attack query


def test_declared_targeted_modes_match_torchattacks_and_the_registry():
    """TORCHATTACKS declares the attacks without a targeted mode (so that a run plans no
    targeted row for them): exactly those whose supported_mode lacks 'targeted'."""
    from c2f_attacks.attacks import attack_info
    from c2f_attacks.attacks.external import TORCHATTACKS

    model = small_cnn(0)
    for name, spec in TORCHATTACKS.items():
        cls = getattr(torchattacks, name)
        kwargs = {"n_classes": 5} if "n_classes" in cls.__init__.__code__.co_varnames else {}
        built = cls(model, **kwargs)
        assert ("targeted" in built.supported_mode) == (spec.targetable is not False), name
        assert attack_info(f"torchattacks:{name}").targetable == (spec.targetable is not False)
    assert attack_info("pgd").targetable and attack_info("lrpf").targetable
