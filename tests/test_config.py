"""Run configuration: options, plans (one per leaderboard row), config files and sweeps."""

import argparse
import math

import pytest

from c2f_attacks.cli import build_parser
from c2f_attacks.cli_types import list_option
from c2f_attacks.runner import DEFAULT_MODELS, RunConfig, expand, read_config
from c2f_attacks.runner.plan import OPTION_NAMES


def _labels(cfg: RunConfig) -> list[str]:
    return [p.label for p in cfg.plans()]


def test_default_run_has_dense_rows_at_both_stages_and_the_mask_controls():
    labels = _labels(RunConfig())
    dense = [f"{a}/{s}/{m}" for a in ("fgsm", "pgd") for s in ("coarse", "fine")
             for m in ("fixed", "minimal")]  # fmt: skip
    guided = [f"{a}/{s}/first_success/{k}" for a, s in (("lrpc", "coarse"), ("lrpf", "fine"))
              for k in ("lrp", "gradient", "random")]  # fmt: skip
    assert labels == dense + guided


def test_modes_run_where_the_attack_supports_them():
    cfg = RunConfig(attacks=["pgd", "lrpc"], masks=["lrp"], modes=["fixed", "first_success"])
    assert _labels(cfg) == ["pgd/coarse/fixed", "pgd/fine/fixed", "lrpc/coarse/fixed/lrp",
                            "lrpc/coarse/first_success/lrp"]  # fmt: skip
    with pytest.raises(ValueError, match="nothing to run"):
        RunConfig(attacks=["pgd"], modes=["first_success"])
    with pytest.raises(ValueError, match="nothing to run"):
        RunConfig(attacks=["lrpc"], stages=["fine"])


def test_plan_keys_carry_budget_mode_mask_and_every_setting():
    cfg = RunConfig(
        attacks=["pgd", "lrpf"],
        masks=["random"],
        modes=["fixed", "minimal"],
        eps=4 / 255,
        eps_max=32 / 255,
        pgd_steps=3,
        memory_format="contiguous",
    )
    keys = {p.label: p.key(None) for p in cfg.plans()}
    fixed, minimal = keys["pgd/coarse/fixed"], keys["pgd/coarse/minimal"]
    assert fixed["eps"] == 4 / 255 and minimal["eps"] == 32 / 255
    assert fixed["steps"] == 3 and fixed["mask"] == "none" and fixed["norm"] == "linf"
    assert "memory_format=contiguous" in fixed["config"]
    assert "minimal_eps=0" in fixed["config"] and "minimal_eps=1" in minimal["config"]
    assert "search_steps" not in fixed["config"] and "search_steps" in minimal["config"]
    # PGD's own default step size (2/255), read from its signature, at full precision
    assert "alpha=0.007843137" in fixed["config"]
    lrpf = keys["lrpf/fine/fixed/random"]
    assert lrpf["mask"] == "random" and "kappa=" in lrpf["config"] and "top_k=" in lrpf["config"]
    with_first = RunConfig(attacks=["lrpc"], masks=["lrp"]).plans()[0].key(None)
    assert math.isnan(with_first["eps"]) and with_first["mode"] == "first_success"


def test_settings_change_the_config_key():
    base = RunConfig(attacks=["lrpc"], masks=["lrp"]).plans()[0].key(None)["config"]
    other = RunConfig(attacks=["lrpc"], masks=["lrp"], lam=0.5).plans()[0].key(None)["config"]
    assert base != other and "lam=0.5" in other


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "num-images must be a positive integer"),
        ({"n": 2.5}, "num-images must be an integer"),
        ({"eps": 2.0}, r"eps must be in \(0, 1\]"),
        ({"eps_max": 0}, r"eps-max must be in \(0, 1\]"),
        ({"out": ""}, "out must name a folder"),
        ({"masks": ["saliency"]}, "unknown mask 'saliency'"),
        ({"attacks": ["cw"]}, "unknown attack 'cw'"),
        ({"stages": "coarse"}, "stages must be a non-empty list"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
        ({"memory_format": "nhwc"}, "unknown memory-format 'nhwc'"),
    ],
)
def test_bad_values_are_refused_with_the_option_named(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        RunConfig(**kwargs)


def test_config_file_sweeps_scalar_lists_and_keeps_list_options(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('attacks = ["pgd", "fgsm"]\nnum-images = 4\neps = [0.01, 0.02]\n'
                    'pgd_steps = [2, 3]\n[torchattacks.APGD]\nsteps = 5\n')  # fmt: skip
    points = read_config(path)
    assert [(p["eps"], p["pgd_steps"]) for p in points] == [
        (0.01, 2),
        (0.01, 3),
        (0.02, 2),
        (0.02, 3),
    ]
    assert all(p["attacks"] == ["pgd", "fgsm"] and p["n"] == 4 for p in points)
    assert points[0]["torchattacks_args"] == {"APGD": {"steps": 5}}
    runs = expand(path, {"n": 2})  # the command line wins over the file
    assert len(runs) == 4 * len(DEFAULT_MODELS) and {r.n for r in runs} == {2}


@pytest.mark.parametrize(
    "text, message",
    [
        ("epsilon = 0.1\n", "unknown key 'epsilon'"),
        ("eps = [\n", "cannot be read"),
        ("eps = []\n", "'eps' is an empty list"),
        ("eps = 3.0\n", "eps must be in"),
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
    fields = set(RunConfig.__dataclass_fields__) - {"torchattacks_args"}
    assert dests == fields
    for action in run._actions:
        if action.dest in fields:
            long = OPTION_NAMES.get(action.dest, action.dest.replace("_", "-"))
            flags = {"figures": "--no-figures", "progress": "--quiet"}.get(action.dest)
            assert (flags or f"--{long}") in action.option_strings


def test_minimal_eps_pgd_keeps_the_step_to_budget_ratio_of_the_fixed_row():
    # PGD's bisection scales alpha as eps * alpha / eps_max: with the fixed row's alpha taken
    # as is, a search up to 64/255 took 8x smaller steps and reported inflated minimal norms.
    plans = {(p.stage, p.mode): dict(p.params) for p in RunConfig().plans() if p.attack == "pgd"}
    for stage in ("coarse", "fine"):
        fixed, minimal = plans[stage, "fixed"], plans[stage, "minimal"]
        assert minimal["alpha"] / minimal["eps"] == pytest.approx(fixed["alpha"] / fixed["eps"])


def test_minimal_eps_pgd_keeps_each_images_first_success():
    # the search asks whether some iterate fools within the budget, as the LRP-guided attacks'
    # first success does; the fixed row stays torchattacks' PGD (no early stop)
    plans = {(p.stage, p.mode): dict(p.params) for p in RunConfig().plans() if p.attack == "pgd"}
    for stage in ("coarse", "fine"):
        assert plans[stage, "minimal"]["early_stop"] is True
        assert plans[stage, "fixed"]["early_stop"] is False


def test_the_default_run_covers_both_shipped_models_one_config_each():
    assert DEFAULT_MODELS == ("shapes-vgg16", "shapes-vgg16-at")
    assert [r.model for r in expand(None, {})] == list(DEFAULT_MODELS)
    assert RunConfig().model == "shapes-vgg16"  # one RunConfig, one model


def test_models_from_the_command_line_or_a_config_file_expand_to_one_run_each(tmp_path):
    args = build_parser().parse_args(["run", "--model", "a.pt,b.pt", "c.pt"])
    assert list_option(args.model) == ["a.pt", "b.pt", "c.pt"]
    assert [r.model for r in expand(None, {"model": ["a.pt", "b.pt"]})] == ["a.pt", "b.pt"]
    assert [r.model for r in expand(None, {"model": "a.pt"})] == ["a.pt"]
    path = tmp_path / "sweep.toml"
    path.write_text('model = ["x.pt", "y.pt"]\neps = [0.01, 0.02]\n')
    runs = expand(path, {})
    points = [(r.model, r.eps) for r in runs]
    assert points == [("x.pt", 0.01), ("x.pt", 0.02), ("y.pt", 0.01), ("y.pt", 0.02)]
    # the command line's models replace the file's, and every sweep point runs each of them
    runs = expand(path, {"model": ["a.pt", "b.pt"]})
    points = [(r.model, r.eps) for r in runs]
    assert points == [("a.pt", 0.01), ("b.pt", 0.01), ("a.pt", 0.02), ("b.pt", 0.02)]


@pytest.mark.parametrize(
    "models, error, message",
    [
        (["a.pt", "a.pt"], ValueError, "model 'a.pt' is given twice"),
        ([], ValueError, "give at least one model"),
        ([["a.pt"]], TypeError, "model must be one model name or path"),
        ([""], TypeError, "model must be one model name or path"),
    ],
)
def test_bad_model_lists_are_refused(models, error, message):
    with pytest.raises(error, match=message):
        expand(None, {"model": models})
