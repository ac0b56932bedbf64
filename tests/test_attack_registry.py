"""The attack registry: every attack says what it is, and is built by name with one call."""

from __future__ import annotations

import pytest
import torch

from c2f_attacks.attacks import (
    FGSM,
    LRPC,
    LRPF,
    PGD,
    AdvLibAttack,
    TorchattacksAttack,
    attack_info,
    create_attack,
    list_attacks,
)
from c2f_attacks.registry import Registry, UnknownNameError
from tests.conftest import shapes_test, small_c2f


def test_our_attacks_describe_themselves():
    assert list_attacks("c2f-attacks") == ["pgd", "fgsm", "lrpc", "lrpf"]
    pgd, lrpc, lrpf = attack_info("pgd"), attack_info("lrpc"), attack_info("lrpf")
    assert pgd.stages == ("coarse", "fine") and pgd.norm == "linf"
    assert pgd.protocols == ("minimal", "fixed") and not pgd.masked
    assert lrpc.stages == ("coarse",) and lrpf.stages == ("fine",)
    assert lrpc.protocols == ("minimal", "fixed", "first_success") and lrpc.masked
    assert (pgd.criterion, lrpc.criterion, lrpf.criterion) == (
        "stage_changed", "stage_changed", "fine_changed_coarse_kept")  # fmt: skip
    # settings come from the constructor: types as annotated, defaults as declared
    assert pgd.settings["alpha"].default == pytest.approx(2 / 255)
    assert pgd.settings["steps"].type == "int" and "float" in pgd.settings["eps"].type
    assert lrpf.settings["kappa"].default == 1.0 and "mask" in lrpf.settings
    assert "model" not in pgd.settings and "stage" not in pgd.settings
    assert lrpc.library == "c2f-attacks" and lrpc.description.startswith("``LRPC(model)``")


def test_create_attack_builds_what_the_class_builds():
    model = small_c2f(0)
    atk = create_attack("pgd", model, stage="fine", eps=4 / 255, steps=3)
    assert isinstance(atk, PGD) and atk.stage == "fine" and atk.eps == 4 / 255
    assert isinstance(create_attack("fgsm", model, stage="coarse"), FGSM)
    assert isinstance(create_attack("lrpc", model), LRPC)
    assert isinstance(create_attack("lrpf", model, stage="fine"), LRPF)
    with pytest.raises(ValueError, match="attack 'lrpc' attacks the coarse stage, not 'fine'"):
        create_attack("lrpc", model, stage="fine")
    with pytest.raises(ValueError, match="attack 'pgd' has no setting 'radius'"):
        create_attack("pgd", model, stage="coarse", radius=1)
    with pytest.raises(UnknownNameError, match="unknown attack 'pgdx'; choose from pgd, fgsm"):
        attack_info("pgdx")


def test_the_criterion_is_an_object_that_travels():
    model = small_c2f(0)
    assert create_attack("lrpf", model).criterion.name == "fine_changed_coarse_kept"
    loose = create_attack("lrpf", model, criterion="stage_changed")
    assert loose.criterion.name == "stage_changed" and loose.criterion.stage == "fine"
    strict = create_attack("pgd", model, stage="fine", criterion="fine_changed_coarse_kept")
    x, _, _ = shapes_test(4)
    res = strict(x)
    assert torch.equal(res.success, (res.adv.fine != res.clean.fine)
                       & (res.adv.coarse == res.clean.coarse))  # fmt: skip
    with pytest.raises(ValueError, match="not defined for the coarse stage"):
        create_attack("pgd", model, stage="coarse", criterion="fine_changed_coarse_kept")


def test_protocol_settings_come_from_the_attack():
    pgd, lrpc = attack_info("pgd"), attack_info("lrpc")
    fixed = pgd.protocol_settings("fixed", 8 / 255, 64 / 255, {"alpha": 2 / 255})
    assert fixed == {"eps": 8 / 255, "minimal_eps": False, "early_stop": True}
    minimal = pgd.protocol_settings("minimal", 8 / 255, 64 / 255, {"alpha": 2 / 255})
    assert minimal["minimal_eps"] and minimal["alpha"] == pytest.approx(16 / 255)
    assert lrpc.protocol_settings("first_success", 8 / 255, 1, {})["eps"] is None
    with pytest.raises(ValueError, match="cannot follow protocol 'first_success'"):
        pgd.protocol_settings("first_success", 8 / 255, 1, {})


def test_external_attacks_resolve_through_their_adapters():
    pytest.importorskip("torchattacks")
    names = list_attacks("torchattacks")
    assert "torchattacks:APGD" in names and "torchattacks:VANILA" not in names
    apgd, deepfool = attack_info("torchattacks:APGD"), attack_info("torchattacks:DeepFool")
    assert apgd.norm == "linf" and apgd.norm_for({"norm": "L2"}) == "l2"
    assert apgd.protocols == ("minimal", "fixed") and not apgd.first_success
    assert deepfool.norm == "l2" and deepfool.minimum_norm and deepfool.protocols == ("minimal",)
    assert attack_info("torchattacks:SparseFool").norm == "l0"
    assert apgd.library.startswith("torchattacks ") and "steps" in apgd.settings
    atk = create_attack("torchattacks:PGD", small_c2f(0), stage="coarse", steps=2)
    assert isinstance(atk, TorchattacksAttack) and atk.name == "torchattacks:PGD"
    with pytest.raises(UnknownNameError, match="unknown torchattacks attack 'PGDX'"):
        attack_info("torchattacks:PGDX")


def test_adv_lib_attacks_resolve_with_their_norms():
    pytest.importorskip("adv_lib")
    names = list_attacks("adv_lib")
    assert {"adv_lib:fmn", "adv_lib:sigma_zero", "adv_lib:vfga", "adv_lib:apgd"} <= set(names)
    assert attack_info("adv_lib:sigma_zero").norm == "l0"
    fmn = attack_info("adv_lib:fmn")
    assert fmn.norm == "linf" and fmn.norm_for({"norm": 0}) == "l0"
    assert fmn.norm_for({"norm": 2}) == "l2" and fmn.minimum_norm
    with pytest.raises(ValueError, match="norm=1 is not a norm"):
        fmn.norm_for({"norm": 1})
    atk = create_attack("adv_lib:fmn", small_c2f(0), stage="coarse", norm=0, steps=5)
    assert isinstance(atk, AdvLibAttack) and atk.norm == "l0"


def test_a_registry_names_entries_and_refuses_unknown_or_repeated_ones():
    colors: Registry[int] = Registry("colour")
    colors.register("red", 1)

    @colors.register("blue")
    def blue():
        return 2

    colors.add_resolver("rgb", lambda rest: int(rest, 16), lambda: ["ff"])
    assert colors.get("red") == 1 and colors.get("blue")() == 2 and colors.get("rgb:ff") == 255
    assert colors.names() == ["red", "blue"] and colors.names(resolved=True)[-1] == "rgb:ff"
    assert "red" in colors and "green" not in colors
    with pytest.raises(UnknownNameError, match="unknown colour 'green'; choose from red, blue"):
        colors.get("green")
    with pytest.raises(ValueError, match="already registered"):
        colors.register("red", 3)


def test_the_docs_attack_table_is_the_registry():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "attacks.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[0].strip("`") in ATTACK_NAMES:
            rows[cells[0].strip("`")] = cells
    assert sorted(rows) == sorted(ATTACK_NAMES)
    for name, (_, stages, norm, protocols, rule, kind) in rows.items():
        info = attack_info(name)
        assert stages.split(", ") == list(info.stages), name
        assert norm.replace("l-inf", "linf") == info.norm
        assert protocols.split(", ") == list(info.protocols), name
        assert rule.strip("`") == info.criterion
        assert ("masked" in kind) == info.masked


ATTACK_NAMES = ("fgsm", "pgd", "lrpc", "lrpf")
