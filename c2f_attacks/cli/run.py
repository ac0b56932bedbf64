"""``c2f-bench run``: the benchmark (attacks, metrics, records, leaderboard, figures).

Options override a ``--config`` file's values, which override :class:`RunConfig`'s defaults;
the defaults shown in ``--help`` are read from RunConfig.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from c2f_attacks.cli.options import (
    add_allow_results_dir,
    add_data_options,
    add_format_option,
    list_option,
    positive_int,
    reported_warnings,
)


def _budget_items(text: str) -> dict[str, str]:
    """``8/255`` (l-inf) or ``NORM=VALUE`` (``l2=0.5``, ``linf=1/255,4/255`` for a grid): one
    norm's budget(s); checked by RunConfig."""
    norm, _, value = text.rpartition("=")
    return {norm.strip() or "linf": value.strip()}


def _setting_item(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` or ``ATTACK.NAME=VALUE`` (ATTACK as listed by --attacks)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or ATTACK.NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _targeted_part() -> str:
    """The default run's targeted rows in words, from :data:`~c2f_attacks.runner.DEFAULT_RUN`."""
    from c2f_attacks.runner.plan import DEFAULT_RUN

    return "; ".join(
        " ".join(f"--{option} {' '.join(part[name])}" for name, option in
                 (("targets", "target"), ("protocols", "protocol"), ("attacks", "attacks"),
                  ("masks", "masks")) if name in part)
        for part in DEFAULT_RUN[1:]
    )  # fmt: skip


def add_parser(subparsers) -> None:
    from c2f_attacks.attacks import MASK_SOURCES, MEMORY_FORMATS, PROTOCOLS
    from c2f_attacks.runner import BACKENDS, DEFAULT_MODELS, STAGES, RunConfig
    from c2f_attacks.runner.plan import FINE_RULES, TARGETS

    d = RunConfig()  # cheap: validation only
    p = subparsers.add_parser(
        "run", help="the benchmark: attacks, metrics, records, leaderboard, figures",
        argument_default=argparse.SUPPRESS,  # only given options override RunConfig/--config
        description="Defaults: RunConfig's (shown in brackets); a --config file's values; "
        "options given here override both. Lists take spaces or commas. Attack names and "
        "settings: c2f-bench attacks. Without --config, --attacks, --masks, --stages, "
        "--protocol and --target, the default run adds targeted rows to RunConfig's: "
        f"{_targeted_part()}, into the same --out; any of those options runs only the rows it "
        "chooses.",
    )  # fmt: skip
    add_data_options(p, models=" ".join(DEFAULT_MODELS))
    p.add_argument("--attacks", nargs="+", metavar="ATTACK",
                   help=f"registered attacks (c2f-bench attacks lists them) "
                   f"[{' '.join(d.attacks)}]")  # fmt: skip
    p.add_argument("--masks", "--mask", nargs="+", metavar="MASK",
                   help=f"mask sources of masked attacks: {', '.join(MASK_SOURCES.names())} "
                   f"[{' '.join(d.masks)}]")  # fmt: skip
    p.add_argument("--stages", nargs="+", metavar="STAGE",
                   help=f"{', '.join(STAGES)} [{' '.join(d.stages)}]")  # fmt: skip
    p.add_argument("--protocol", "--protocols", dest="protocols", nargs="+", metavar="PROTOCOL",
                   help=f"{', '.join(PROTOCOLS)} (a diagnostic) "
                   f"[{' '.join(d.protocols)}]")  # fmt: skip
    budgets = lambda b: " ".join(f"{k}={v:.4g}" for k, v in b.items())  # noqa: E731
    p.add_argument("--eps", nargs="+", type=_budget_items, metavar="[NORM=]BUDGET",
                   help=f"fixed protocol's budget per norm; a bare value is l-inf "
                   f"[{budgets(d.eps)}]")  # fmt: skip
    p.add_argument("--eps-max", nargs="+", type=_budget_items, metavar="[NORM=]BOUND",
                   help=f"minimal protocol's search bound per norm "
                   f"[{budgets(d.eps_max)}]")  # fmt: skip
    p.add_argument("--budgets", nargs="+", type=_budget_items, metavar="NORM=B1,B2,...",
                   help="the budgets of budget_curves.csv for a norm (e.g. "
                   "linf=1/255,4/255,8/255) [docs/metrics.md's grids]")  # fmt: skip
    p.add_argument("--search-steps", type=positive_int,
                   help="halvings of the minimal protocol's bisection, the same for every attack "
                   f"(resolution eps-max / 2**steps) [{d.search_steps}]")  # fmt: skip
    p.add_argument("--fine-rule", choices=FINE_RULES,
                   help=f"success rule of every attack on the fine stage "
                   f"[{d.fine_rule}]")  # fmt: skip
    p.add_argument("--target", "--targets", dest="targets", nargs="+", metavar="TARGET",
                   help=f"target policies, each row made once per policy: {', '.join(TARGETS)} "
                   "(none: untargeted; a targeted row's success rule is target_reached) "
                   f"[{' '.join(d.targets)}]")  # fmt: skip
    p.add_argument("--set", dest="settings", nargs="+", type=_setting_item,
                   metavar="[ATTACK.]NAME=VALUE",
                   help="an attack setting, for every attack that has it or for ATTACK only "
                   "(e.g. top_k=0.2 lrpc.lam=0)")  # fmt: skip
    p.add_argument("--memory-format", choices=MEMORY_FORMATS, help=f"[{d.memory_format}]")
    p.add_argument("--config", help="TOML file with any of these options (lists sweep)")
    p.add_argument("--backend", choices=BACKENDS,
                   help=f"also evaluate in onnxruntime [{d.backend}]")  # fmt: skip
    p.add_argument("--seed", type=int, help=f"[{d.seed}]")
    p.add_argument("--out", help=f"folder for the leaderboard, records and figures [./{d.out}]")
    add_allow_results_dir(p)
    add_format_option(p, default=argparse.SUPPRESS, help=f"how the rows are printed [{d.format}]")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run with the same settings in --out")  # fmt: skip
    p.add_argument("--max-memory", metavar="SIZE",
                   help="memory the run may use (4G, 512M); sets each row's batch size "
                   "[half of the available memory; CUDA: 80%% of the free GPU memory]")  # fmt: skip
    p.add_argument("--no-figures", dest="figures", action="store_false")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from c2f_attacks.leaderboard import render_table, target_policy
    from c2f_attacks.runner import RunConfig, expand, run_all
    from c2f_attacks.runner.settings import parse_settings

    fields = RunConfig.__dataclass_fields__
    overrides = {k: v for k, v in vars(args).items() if k in fields}
    for name in ("model", "attacks", "masks", "stages", "protocols", "targets"):
        if name in overrides:
            overrides[name] = list_option(overrides[name])
    for name in ("eps", "eps_max", "budgets"):
        if name in overrides:
            overrides[name] = {k: v for item in overrides[name] for k, v in item.items()}
    if "settings" in overrides:
        attacks = overrides.get("attacks")
        overrides["settings"] = parse_settings(overrides["settings"], attacks)
    configs = expand(getattr(args, "config", None), overrides)
    with reported_warnings("run"):
        rows = run_all(configs)
    if not len(rows):  # ranks other than 0 under torchrun
        return 0
    fmt = configs[0].format
    # Machine formats keep stdout parseable; the where-to-find lines go to stderr.
    info = sys.stdout if fmt == "table" else sys.stderr
    # One table per data set, protocol and target policy; a model column when it holds several
    # models' rows.
    rows = rows.assign(_target=[target_policy(c) for c in rows["config"]])
    for (dataset, split, n, protocol, target), part in rows.groupby(
        ["dataset", "split", "n", "protocol", "_target"], sort=False
    ):
        part = part.drop(columns="_target")
        if fmt == "table":
            models = ", ".join(dict.fromkeys(part["model"]))
            rules = "; ".join(f"{stage}: {rule}" for stage, rule in dict.fromkeys(
                zip(part["stage"], part["success_rule"])))  # fmt: skip
            aimed = "" if target == "none" else f", {target} targets"
            print(f"{models} on {dataset}/{split}, {n} images, protocol {protocol}{aimed} "
                  f"(success: {rules}):")  # fmt: skip
        print(render_table(part, fmt=fmt))
    for out in dict.fromkeys(str(Path(c.out)) for c in configs):
        print(f"leaderboard: {out}/leaderboard.csv; records: {out}/records/; "
              f"figures: {out}/figures/", file=info)  # fmt: skip
    return 0
