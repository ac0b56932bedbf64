"""Naming leaderboard rows on the command line: a row_id, or
``[MODEL/]attack:mask[:stage[:protocol[:target]]]``.

``lrpc:lrp`` names the untargeted LRPC rows with the LRP mask;
``shapes-vgg16-at/pgd:none:fine:minimal`` one row of one model, and
``shapes-vgg16-at/pgd:none:fine:minimal:random`` its targeted twin (random targets; the target
is the policy the row's ``config`` names). The attack part may itself hold a colon
(``torchattacks:APGD:none``): it is matched against the attack names the board has, longest
first. ``MODEL/`` is everything before the last ``/`` (a model given as a path keeps its own
slashes). Fields left out match every value, except the target: left out it is ``none``, as for
``c2f-bench run --target``, so a selector names the untargeted rows it named before runs had
targeted ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from c2f_attacks.errors import UserError
from c2f_attacks.leaderboard.storage import target_policy

FIELDS = ("attack", "mask", "stage", "protocol", "target")
GRAMMAR = "[MODEL/]attack:mask[:stage[:protocol[:target]]]"


def match_rows(board: pd.DataFrame, spec: str) -> np.ndarray:
    """Boolean mask of the rows of ``board`` that ``spec`` names (a row_id, or the grammar
    above); a spec that does not parse is a ValueError saying the grammar."""
    if spec in set(board["row_id"]):
        return (board["row_id"] == spec).to_numpy()
    model, _, rest = spec.rpartition("/")
    attacks = sorted(set(board["attack"]), key=len, reverse=True)
    attack = next((a for a in attacks if rest == a or rest.startswith(f"{a}:")), None)
    if attack is None:
        return np.zeros(len(board), dtype=bool)
    parts = [attack, *(rest[len(attack) + 1 :].split(":") if rest != attack else [])]
    if len(parts) > len(FIELDS) or "" in parts:
        raise UserError(f"row {spec!r}: give a row_id or {GRAMMAR}")
    parts += [None] * (len(FIELDS) - len(parts))
    parts[-1] = parts[-1] or "none"  # the target: untargeted unless named
    match = np.ones(len(board), dtype=bool)
    if model:
        match &= (board["model"] == model).to_numpy()
    for column, value in zip(FIELDS, parts):
        if value is not None:
            match &= (_column(board, column) == value).to_numpy()
    return match


def _column(board: pd.DataFrame, column: str) -> pd.Series:
    """A selector field's values: a key column, or the target policy of each row's config."""
    if column == "target":
        config = board["config"] if "config" in board.columns else pd.Series("", board.index)
        return pd.Series([target_policy(c) for c in config], index=board.index)
    return board[column]


def describe(board: pd.DataFrame) -> list[str]:
    """Each row as the full selector that names it alone (model/attack:mask:stage:protocol, and
    ``:target`` for a targeted row), followed by its row_id."""
    return [f"{r['model']}/{r['attack']}:{r['mask']}:{r['stage']}:{r['protocol']}"
            f"{'' if (t := target_policy(r.get('config'))) == 'none' else f':{t}'} "
            f"({r['row_id']})" for r in board.to_dict("records")]  # fmt: skip


def select_one(board: pd.DataFrame, spec: str, where: str) -> pd.Series:
    """The one row ``spec`` names in ``board`` (of ``where``, for messages); none or several is
    a ValueError that lists the candidates."""
    match = match_rows(board, spec)
    if match.sum() == 1:
        return board[match].iloc[0]
    if not match.any():
        raise UserError(f"row {spec!r} matches no row of {where}; its rows: "
                         f"{'; '.join(describe(board))}")  # fmt: skip
    raise UserError(
        f"row {spec!r} matches {int(match.sum())} rows of {where}: "
        f"{'; '.join(describe(board[match]))}; name one ({GRAMMAR} or a row_id)"
    )


def select_many(board: pd.DataFrame, specs: Sequence[str] | None, where: str) -> pd.DataFrame:
    """The rows any of ``specs`` names (every row for None); a spec that names none is a
    ValueError listing what there is."""
    if not specs:
        return board
    chosen = np.zeros(len(board), dtype=bool)
    for spec in specs:
        match = match_rows(board, spec)
        if not match.any():
            there = sorted(set(board["attack"] + ":" + board["mask"] + ":" + board["stage"]))
            raise UserError(f"row {spec!r} matches no row of {where}; it has {', '.join(there)}")
        chosen |= match
    return board[chosen]
