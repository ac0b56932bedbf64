"""Run configuration: options, plans (one per leaderboard row), config files and sweeps."""

import argparse
import math
from pathlib import Path

import pytest

from c2f_attacks import runner
from c2f_attacks.cli import build_parser
from c2f_attacks.cli.options import list_option
from c2f_attacks.errors import UserError
from c2f_attacks.runner import DEFAULT_MODELS, RunConfig, expand, read_config
from c2f_attacks.runner.plan import OPTION_NAMES
from c2f_attacks.runner.settings import parse_settings
from tests.conftest import small_c2f

ROOT = Path(__file__).resolve().parent.parent


def _labels(cfg: RunConfig) -> list[str]:
    return [p.label for p in cfg.plans()]


def test_default_run_has_every_attack_under_both_protocols_and_the_mask_controls():
    labels = _labels(RunConfig())
    dense = [f"{a}/{s}/{p}" for a in ("fgsm", "pgd") for s in ("coarse", "fine")
             for p in ("minimal", "fixed")]  # fmt: skip
    guided = [f"{a}/{s}/{p}/{k}" for a, s in (("lrpc", "coarse"), ("lrpf", "fine"))
              for p in ("minimal", "fixed") for k in ("lrp", "gradient", "random")]  # fmt: skip
    assert labels == dense + guided


def test_one_success_rule_per_stage_for_every_attack():
    plans = RunConfig().plans()
    assert {p.success_rule for p in plans if p.stage == "coarse"} == {"stage_changed"}
    assert {p.success_rule for p in plans if p.stage == "fine"} == {"fine_changed_coarse_kept"}
    loose = RunConfig(fine_rule="stage_changed").plans()
    assert {p.success_rule for p in loose if p.stage == "fine"} == {"stage_changed"}
    assert all(p.build(small_c2f(0)).criterion.name == p.success_rule for p in loose[:4])


def test_protocols_run_where_the_attack_follows_them():
    cfg = RunConfig(attacks=["pgd", "lrpc"], masks=["lrp"], protocols=["fixed", "first_success"])
    assert _labels(cfg) == ["pgd/coarse/fixed", "pgd/fine/fixed", "lrpc/coarse/fixed/lrp",
                            "lrpc/coarse/first_success/lrp"]  # fmt: skip
    with pytest.raises(ValueError, match="attack 'pgd' cannot follow first_success"):
        RunConfig(attacks=["pgd"], protocols=["first_success"])
    with pytest.raises(ValueError, match="nothing to run"):
        RunConfig(attacks=["lrpc"], stages=["fine"])


def test_fixed_protocol_stops_every_image_at_its_first_success():
    for plan in RunConfig(protocols=["fixed"]).plans():
        params = dict(plan.params)
        assert params.get("early_stop", True) is True, plan.label  # FGSM: one step; LRP: always


def test_plan_keys_carry_budget_protocol_mask_rule_and_every_setting():
    cfg = RunConfig(
        attacks=["pgd", "lrpf"],
        masks=["random"],
        eps={"linf": "4/255"},
        eps_max={"linf": 32 / 255},
        settings={"pgd": {"steps": 3}},
        memory_format="contiguous",
    )
    keys = {p.label: p.key() for p in cfg.plans()}
    fixed, minimal = keys["pgd/coarse/fixed"], keys["pgd/coarse/minimal"]
    assert fixed["eps"] == 4 / 255 and minimal["eps"] == 32 / 255
    assert fixed["steps"] == 3 and fixed["mask"] == "none" and fixed["norm"] == "linf"
    assert fixed["protocol"] == "fixed" and fixed["success_rule"] == "stage_changed"
    assert "memory_format=contiguous" in fixed["config"]
    assert "minimal_eps=0" in fixed["config"] and "minimal_eps=1" in minimal["config"]
    lrpf = keys["lrpf/fine/fixed/random"]
    assert lrpf["mask"] == "random" and "kappa=" in lrpf["config"] and "top_k=" in lrpf["config"]
    assert lrpf["success_rule"] == "fine_changed_coarse_kept"
    diagnostic = RunConfig(attacks=["lrpc"], masks=["lrp"], protocols=["first_success"])
    first = diagnostic.plans()[0].key()
    assert math.isnan(first["eps"]) and first["protocol"] == "first_success"


def test_settings_apply_to_every_attack_that_has_them_or_to_one():
    base = RunConfig(attacks=["lrpc"], masks=["lrp"]).plans()[0].key()["config"]
    shared = RunConfig(attacks=["lrpc", "lrpf", "pgd"], masks=["lrp"], settings={"lam": 0.5})
    for plan in shared.plans():
        assert ("lam=0.5" in plan.key()["config"]) == (plan.attack != "pgd")
    assert "lam=0.5" not in base
    own = RunConfig(attacks=["lrpc", "lrpf"], masks=["lrp"], settings={"lrpc": {"lam": 0.5}})
    assert [dict(p.params)["lam"] for p in own.plans()] == [0.5, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="setting 'lamda': no attack of the run or of this"):
        RunConfig(attacks=["pgd"], settings={"lamda": 1})
    with pytest.raises(ValueError, match="attack 'pgd' has no setting 'lam'"):
        RunConfig(attacks=["pgd"], settings={"pgd": {"lam": 1}})
    with pytest.raises(ValueError, match="unknown attack 'pgdx'"):
        RunConfig(attacks=["pgd"], settings={"pgdx": {"lam": 1}})
    # a config's settings for an attack the run leaves out wait for a run that has it
    assert RunConfig(attacks=["pgd"], settings={"lrpc": {"lam": 1}}).plans()
    with pytest.raises(ValueError, match="setting 'eps' is set by the run itself"):
        RunConfig(attacks=["pgd"], settings={"eps": 0.1})


def test_settings_from_the_command_line_are_typed_by_the_registry():
    items = [("top_k", "0.2"), ("lrpc.lam", "0"), ("pgd.random_start", "false"),
             ("pgd.alpha", "1/255"), ("lrpc.composite", "epsilon_gamma_box")]  # fmt: skip
    settings = parse_settings(items, ["pgd", "lrpc"])
    assert settings == {"top_k": 0.2, "lrpc": {"lam": 0.0, "composite": "epsilon_gamma_box"},
                        "pgd": {"random_start": False, "alpha": 1 / 255}}  # fmt: skip
    with pytest.raises(ValueError, match="expected int"):
        parse_settings([("pgd.steps", "ten")], ["pgd"])
    assert parse_settings([("kappa", "1")], ["pgd"]) == {"kappa": 1.0}  # LRPF's, for a config
    with pytest.raises(ValueError, match="or of this library has a setting 'kapa'"):
        parse_settings([("kapa", "1")], ["pgd"])
    with pytest.raises(ValueError, match="unknown attack 'pgdx'"):
        parse_settings([("pgdx.steps", "1")], ["pgd"])


def test_external_attacks_follow_the_protocols_they_can():
    pytest.importorskip("torchattacks")
    cfg = RunConfig(attacks=["torchattacks:APGD", "torchattacks:DeepFool"], stages=["coarse"])
    keys = {p.label: p.key() for p in cfg.plans()}
    assert list(keys) == ["torchattacks:APGD/coarse/minimal", "torchattacks:APGD/coarse/fixed",
                          "torchattacks:DeepFool/coarse/minimal"]  # fmt: skip
    assert keys["torchattacks:DeepFool/coarse/minimal"]["norm"] == "l2"
    assert math.isnan(keys["torchattacks:DeepFool/coarse/minimal"]["eps"])
    l2 = RunConfig(attacks=["torchattacks:APGD"], stages=["coarse"], protocols=["fixed"],
                   settings={"norm": "L2"}, eps={"l2": 0.75})  # fmt: skip
    assert l2.plans()[0].key()["norm"] == "l2" and l2.plans()[0].key()["eps"] == 0.75


def test_external_n_classes_is_the_stages_class_count_in_a_run(shipped, tmp_path):
    """torchattacks' FAB, APGDT and AutoAttack take n_classes (their own default: 10): a run
    gives them the stage's number of classes (shapes: 4 coarse, 12 fine), the row's config shows
    the value used, and a --set n_classes still wins."""
    pytest.importorskip("torchattacks")
    classes = {"coarse": 4, "fine": 12}
    names = ["torchattacks:FAB", "torchattacks:APGDT", "torchattacks:AutoAttack"]
    for plan in RunConfig(attacks=names, protocols=["minimal"]).plans():
        assert plan.build(shipped).settings["n_classes"] == classes[plan.stage], plan.label
    rows = runner.run(RunConfig(out=str(tmp_path / "run"), model="shapes-vgg16", n=2,
                                attacks=["torchattacks:FAB"], protocols=["minimal"],
                                figures=False, progress=False, settings={"steps": 1}))  # fmt: skip
    for stage, config in zip(rows["stage"], rows["config"]):
        assert f"n_classes={classes[stage]}" in config.split(";"), config
    given = RunConfig(attacks=["torchattacks:FAB"], protocols=["minimal"], stages=["fine"],
                      settings={"n_classes": 5})  # fmt: skip
    (plan,) = given.plans()
    assert plan.build(shipped).settings["n_classes"] == 5 and "n_classes=5" in plan.key()["config"]


def test_target_policies_make_rows_of_their_own():
    """--target none random: a targeted row per policy beside the untargeted one, with the rule
    target_reached and the policy in its config; attacks without a targeted form get the
    untargeted rows only, and none at all is an error naming the attack."""
    pytest.importorskip("torchattacks")
    cfg = RunConfig(attacks=["pgd", "torchattacks:DeepFool"], stages=["fine"],
                    protocols=["minimal"], targets=["none", "random"])  # fmt: skip
    keys = {p.label: p.key() for p in cfg.plans()}
    assert list(keys) == ["pgd/fine/minimal", "pgd/fine/minimal/target=random",
                          "torchattacks:DeepFool/fine/minimal"]  # fmt: skip
    aimed, plain = keys["pgd/fine/minimal/target=random"], keys["pgd/fine/minimal"]
    assert aimed["success_rule"] == "target_reached"
    assert plain["success_rule"] == "fine_changed_coarse_kept"
    assert aimed["config"] == plain["config"] + ";target=random"
    with pytest.raises(UserError, match="--target random: attack 'torchattacks:DeepFool' has no "
                                        "targeted mode"):  # fmt: skip
        RunConfig(attacks=["torchattacks:DeepFool"], targets=["random"])


def test_targets_in_a_config_file_are_a_list_option(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('attacks = ["pgd"]\ntarget = ["none", "nearest"]\n')
    (point,) = read_config(path)
    assert point["targets"] == ["none", "nearest"]
    args = build_parser().parse_args(["run", "--target", "random", "least_likely"])
    assert args.targets == ["random", "least_likely"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "num-images must be a positive integer"),
        ({"n": 2.5}, "num-images must be an integer"),
        ({"eps": 2.0}, r"--eps linf must be in \(0, 1\]"),
        ({"eps_max": 0}, r"--eps-max linf must be in \(0, 1\]"),
        ({"eps": {"l7": 0.1}}, "--eps: unknown norm 'l7'"),
        ({"eps": {"l2": "abc"}}, "--eps l2 must be a number or a fraction"),
        ({"eps": {"l2": -1}}, r"--eps l2 must be in \(0, inf\)"),
        ({"protocols": ["bisect"]}, "unknown protocol 'bisect'"),
        ({"fine_rule": "any"}, "unknown fine-rule 'any'"),
        ({"out": ""}, "out must name a folder"),
        ({"masks": ["saliency"]}, "unknown mask 'saliency'"),
        ({"attacks": ["cw"]}, "unknown attack 'cw'"),
        ({"attacks": ["torchattacks:CWX"]}, "unknown torchattacks attack 'CWX'"),
        ({"stages": "coarse"}, "stages must be a non-empty list"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
        ({"memory_format": "nhwc"}, "unknown memory-format 'nhwc'"),
        ({"targets": ["closest"]}, "unknown target 'closest'; choose from none, random"),
        ({"targets": "random"}, "targets must be a non-empty list"),
    ],
)
def test_bad_values_are_refused_with_the_option_named(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        RunConfig(**kwargs)


def test_config_file_sweeps_scalar_lists_and_keeps_list_options(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('attacks = ["pgd", "fgsm"]\nnum-images = 4\neps = [0.01, 0.02]\n'
                    '[settings.pgd]\nsteps = [2, 3]\n[eps-max]\nlinf = "32/255"\n')  # fmt: skip
    points = read_config(path)
    assert [(p["eps"], p["settings"]["pgd"]["steps"]) for p in points] == [
        (0.01, 2),
        (0.01, 3),
        (0.02, 2),
        (0.02, 3),
    ]
    assert all(p["attacks"] == ["pgd", "fgsm"] and p["n"] == 4 for p in points)
    assert all(p["eps_max"] == {"linf": "32/255"} for p in points)
    runs = expand(path, {"n": 2, "settings": {"pgd": {"alpha": 0.01}}})  # the command line wins
    assert len(runs) == 4 * len(DEFAULT_MODELS) and {r.n for r in runs} == {2}
    assert {r.settings["pgd"]["alpha"] for r in runs} == {0.01}  # and merges per entry
    assert sorted({r.settings["pgd"]["steps"] for r in runs}) == [2, 3]
    assert {r.eps_max["linf"] for r in runs} == {32 / 255}


@pytest.mark.parametrize(
    "text, message",
    [
        ("epsilon = 0.1\n", "unknown key 'epsilon'"),
        ("eps = [\n", "cannot be read"),
        ("eps = []\n", "'eps' is an empty list"),
        ("eps = 3.0\n", "eps linf must be in"),
        ("modes = ['fixed']\n", "'modes' is now 'protocols'"),
    ],
)
def test_config_file_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        expand(path, {})
    assert str(path) in str(err.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="missing.toml does not exist"):
        read_config(tmp_path / "missing.toml")


def test_every_run_option_is_a_config_field_and_back():
    """One list of names: the CLI options of `run` are RunConfig's fields (and config keys)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    dests = {a.dest for a in run._actions if a.dest not in ("help", "config", "func")}
    fields = set(RunConfig.__dataclass_fields__)
    assert dests == fields
    for action in run._actions:
        if action.dest in fields:
            long = OPTION_NAMES.get(action.dest, action.dest.replace("_", "-"))
            flags = {"figures": "--no-figures", "progress": "--quiet"}.get(action.dest)
            assert (flags or f"--{long}") in action.option_strings


def test_minimal_pgd_keeps_the_step_to_budget_ratio_of_the_fixed_row():
    # PGD's bisection scales alpha as eps * alpha / eps_max: with the fixed row's alpha taken
    # as is, a search up to 64/255 took 8x smaller steps and reported inflated minimal norms.
    plans = {(p.stage, p.protocol): dict(p.params) for p in RunConfig().plans()
             if p.attack == "pgd"}  # fmt: skip
    for stage in ("coarse", "fine"):
        fixed, minimal = plans[stage, "fixed"], plans[stage, "minimal"]
        assert minimal["alpha"] / minimal["eps"] == pytest.approx(fixed["alpha"] / fixed["eps"])
        assert minimal["early_stop"] is True and fixed["early_stop"] is True


def test_the_default_run_covers_both_shipped_models_one_config_each():
    assert DEFAULT_MODELS == ("shapes-vgg16", "shapes-vgg16-at")
    # its untargeted part for every model, then its targeted part
    assert [r.model for r in expand(None, {})] == list(DEFAULT_MODELS) * 2
    assert RunConfig().model == "shapes-vgg16"  # one RunConfig, one model


def test_the_default_run_adds_random_target_rows_and_only_those():
    """Per model the 20 untargeted rows and 4 targeted ones: random targets, minimal protocol,
    PGD at both stages, LRPC and LRPF with the lrp mask; 48 rows in all, into one folder."""
    runs = expand(None, {"n": 2, "out": "somewhere"})
    plans = [(r.model, p) for r in runs for p in r.plans()]
    assert len(plans) == 48 and {r.out for r in runs} == {"somewhere"}
    targeted = [(model, p) for model, p in plans if p.target != "none"]
    assert [p.label for model, p in targeted if model == "shapes-vgg16"] == [
        "pgd/coarse/minimal/target=random", "pgd/fine/minimal/target=random",
        "lrpc/coarse/minimal/lrp/target=random", "lrpf/fine/minimal/lrp/target=random"]  # fmt: skip
    assert len(targeted) == 8 and {p.success_rule for _, p in targeted} == {"target_reached"}
    untargeted = [p.label for model, p in plans if p.target == "none" and model == "shapes-vgg16"]
    assert untargeted == _labels(RunConfig())
    # the other options apply to both parts
    assert all(r.n == 2 for r in runs)
    assert len(expand(None, {"seed": 3, "eps": {"linf": 0.01}})) == 4


CHOSEN_ROWS = [{"attacks": ["fgsm", "pgd", "lrpc", "lrpf"]}, {"masks": ["lrp"]},
               {"stages": ["coarse"]}, {"protocols": ["minimal"]},
               {"targets": ["random"]}]  # fmt: skip


@pytest.mark.parametrize("chosen", CHOSEN_ROWS)
def test_a_run_that_chooses_its_rows_has_no_default_targeted_part(chosen):
    runs = expand(None, chosen)
    assert [r.model for r in runs] == list(DEFAULT_MODELS)
    assert {tuple(r.targets) for r in runs} == {tuple(chosen.get("targets", ["none"]))}
    assert len(runs[0].plans()) == len(RunConfig(**chosen).plans())


def test_models_from_the_command_line_or_a_config_file_expand_to_one_run_each(tmp_path):
    args = build_parser().parse_args(["run", "--model", "a.pt,b.pt", "c.pt"])
    assert list_option(args.model) == ["a.pt", "b.pt", "c.pt"]
    # the default run: both of its parts for every model given
    runs = expand(None, {"model": ["a.pt", "b.pt"]})
    assert [(r.model, tuple(r.targets)) for r in runs] == [
        ("a.pt", ("none",)), ("b.pt", ("none",)), ("a.pt", ("random",)), ("b.pt", ("random",))
    ]  # fmt: skip
    assert [r.model for r in expand(None, {"model": "a.pt"})] == ["a.pt"] * 2
    assert [r.model for r in expand(None, {"model": "a.pt", "attacks": ["pgd"]})] == ["a.pt"]
    path = tmp_path / "sweep.toml"
    path.write_text('model = ["x.pt", "y.pt"]\neps = [0.01, 0.02]\n')
    runs = expand(path, {})
    points = [(r.model, r.eps["linf"]) for r in runs]
    assert points == [("x.pt", 0.01), ("x.pt", 0.02), ("y.pt", 0.01), ("y.pt", 0.02)]
    # the command line's models replace the file's, and every sweep point runs each of them
    runs = expand(path, {"model": ["a.pt", "b.pt"]})
    points = [(r.model, r.eps["linf"]) for r in runs]
    assert points == [("a.pt", 0.01), ("b.pt", 0.01), ("a.pt", 0.02), ("b.pt", 0.02)]


@pytest.mark.parametrize(
    "models, error, message",
    [
        (["a.pt", "a.pt"], ValueError, "model 'a.pt' is given twice"),
        ([], ValueError, "give at least one model"),
        ([["a.pt"]], UserError, "model must be one model name or path"),
        ([""], UserError, "model must be one model name or path"),
    ],
)
def test_bad_model_lists_are_refused(models, error, message):
    with pytest.raises(error, match=message):
        expand(None, {"model": models})


def test_budgets_no_attack_of_the_run_measures_are_refused_before_any_attack():
    with pytest.raises(ValueError, match=r"--eps l0=0.1: no attack of the run has an l0 budget"):
        RunConfig(attacks=["fgsm"], eps={"l0": 0.1})
    with pytest.raises(ValueError, match=r"--eps-max l2=2: no attack of the run has an l2"):
        RunConfig(attacks=["pgd", "lrpc"], eps_max={"l2": 2})
    assert RunConfig(attacks=["fgsm"], eps={"linf": "4/255"}).eps["linf"] == 4 / 255


def test_a_budget_grid_is_checked_and_replaces_the_default_one(tmp_path):
    cfg = RunConfig(attacks=["fgsm"], budgets={"linf": "4/255, 1/255", "l0": [0.5]})
    assert cfg.budgets == {"linf": (1 / 255, 4 / 255), "l0": (0.5,)}
    for grid, message in (("1/255, -2/255", "--budgets"), ("1/255, abc", "--budgets"),
                          ("0", "--budgets")):  # fmt: skip
        with pytest.raises(ValueError, match=message) as err:
            RunConfig(attacks=["fgsm"], budgets={"linf": grid})
        assert grid.split(", ")[-1] in str(err.value)
    with pytest.raises(ValueError, match="--budgets: unknown norm 'l3'"):
        RunConfig(attacks=["fgsm"], budgets={"l3": "1"})
    path = tmp_path / "grid.toml"
    path.write_text('[budgets]\nlinf = ["1/255", "8/255"]\n')
    (point,) = read_config(path)
    assert RunConfig(**point).budgets == {"linf": (1 / 255, 8 / 255)}
    path.write_text("[budgets]\nlinf = 0.03\nl0 = true\n")  # one number: a grid of one
    (point,) = read_config(path)
    with pytest.raises(UserError, match=r"--budgets \(l0\) must be a number .* True is not"):
        RunConfig(**point)
    point["budgets"].pop("l0")
    assert RunConfig(**point).budgets == {"linf": (0.03,)}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_committed_study_configs_plan_every_attack_they_name(path):
    runs = expand(path, {})
    assert runs
    for run in runs:
        planned = {plan.attack for plan in run.plans()}
        assert planned == set(run.attacks)  # every attack named has rows under some protocol
