"""``c2f-bench attacks``: the registered attacks (stages, norm, protocols, success rule), or one
attack's settings with their types and defaults."""

from __future__ import annotations

import argparse

from c2f_attacks.cli.options import add_format_option

#: the columns of the attack table, in order
COLUMNS = ("attack", "stages", "norm", "protocols", "success_rule", "kind", "library")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attacks", help="the registered attacks: stages, norm, protocols, settings"
    )
    p.add_argument("name", nargs="?", help="one attack: its settings with types and defaults")
    p.add_argument("--library", choices=("c2f-attacks", "torchattacks", "adv_lib"),
                   help="only this library's attacks")  # fmt: skip
    add_format_option(p)
    p.set_defaults(func=_attacks)


def _attacks(args: argparse.Namespace) -> int:
    from c2f_attacks.attacks import attack_info, list_attacks
    from c2f_attacks.attacks.registry import attack_table
    from c2f_attacks.leaderboard import render_table

    if args.name:
        info = attack_info(args.name)
        print(f"{info.name} ({info.library}): {info.description}")
        print(f"stages {', '.join(info.stages)}; norm {info.norm}; protocols "
              f"{', '.join(info.protocols)}; success rule {info.criterion}")  # fmt: skip
        for setting in info.settings.values():
            default = "required" if setting.required else repr(setting.default)
            print(f"  {setting.name}: {setting.type or 'any'} = {default}")
        return 0
    table = attack_table(list_attacks(args.library))
    print(render_table(table, list(COLUMNS), fmt=args.format))
    return 0
