"""Transfer records: a run's adversarial images replayed on other models, one record per (source
row, target, image), and the ``transfer.csv`` aggregates, computed from those records alone.

A *source row* is a leaderboard row of a run (its key :data:`KEY`, its per-image records, its
saved adversarial images); a *target* is a model the images are replayed on. Per image, with
the target's clean predictions (c, f) and adversarial ones (c', f'):

- ``source_success``: the row's own record of success, on its own model;
- ``target_success``: the row's success rule (its ``success_rule`` at its ``stage``,
  :func:`~c2f_attacks.attacks.criteria.get_criterion`) applied to the target's predictions,
  judged against the *target's* clean ones: ``s' != s`` for ``stage_changed``,
  ``f' != f and c' == c`` for ``fine_changed_coarse_kept``;
- ``target_clean_coarse``, ``target_clean_fine``, ``target_adv_coarse``, ``target_adv_fine``:
  c, f, c', f';
- ``clean_agreement``: the target's clean (c, f) equal the source model's;
- ``quantized_away``: for a target whose graph quantizes its input (INT8), 1 when the adversarial
  and the clean image quantize to the same input, else 0; -1 where that does not apply.

Every line of a (row, target) file also carries what is the same for all its images: the source
row's key and ``row_id``, ``target``, ``target_hash``, ``input_quantization`` (INT8 targets:
what the graph's input quantization is; empty otherwise) and ``stopping_rule``: the row's attack
stops each image at its first success inside the protocol's budget (``first_success``: ours) or
runs its own iterations (``own``: external attacks; ``AttackInfo.first_success``).

Files: ``<out>/transfer_records/<row_id>.<target id>.csv.gz`` (target id: 12 hex digits of the
SHA-256 of the target's name), written atomically in the records' format
(:func:`~c2f_attacks.evaluation.records.write_keyed_file`), read back strictly.

Aggregates per (row, target) (:func:`transfer_summary`), over its N images; every share ``k/n``
with its 95% Clopper-Pearson interval ``<share>_lo`` / ``<share>_hi``
(:func:`~c2f_attacks.evaluation.exact.share_interval`):

- ``transfer_fooling_ratio`` = #target_success / N;
- ``coarse_flipped`` = #(c' != c) / N, ``fine_flipped`` = #(f' != f) / N;
- ``source_fooling_ratio`` = #source_success / N = ``n_source_success`` / N;
- ``survival`` = #(source_success and target_success) / ``n_source_success``: the share of the
  source's successes that also fool the target (NaN, interval too, when the source fooled none);
- ``clean_agreement`` = #clean_agreement / N;
- ``quantized_away``: the number of images quantized away (NaN where it does not apply).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from c2f_attacks.attacks.criteria import get_criterion
from c2f_attacks.attacks.predictions import Predictions
from c2f_attacks.attacks.registry import attack_info
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.exact import share_interval
from c2f_attacks.evaluation.records import (
    KEY,
    KEY_KINDS,
    check_one_key,
    empty_keyed_frame,
    read_keyed_file,
    row_id,
    write_keyed_file,
)
from c2f_attacks.evaluation.typed_csv import cell_text

#: a transfer.csv row is one source row (its leaderboard key) and one target
TRANSFER_KEY: tuple[str, ...] = (*KEY, "target")
STOPPING_RULES = ("first_success", "own")
#: per (row, target): the same on every line of its file
PAIR_COLUMNS = ("target", "target_hash", "input_quantization", "stopping_rule")
_LEAD_KINDS: dict[str, str] = {**KEY_KINDS, "row_id": "text", **dict.fromkeys(PAIR_COLUMNS, "text")}
#: per image: column -> kind (:mod:`~c2f_attacks.evaluation.typed_csv`)
TRANSFER_RECORD_KINDS: dict[str, str] = {
    "index": "int", "source_success": "bool", "target_success": "bool",
    "target_clean_coarse": "int", "target_clean_fine": "int",
    "target_adv_coarse": "int", "target_adv_fine": "int",
    "clean_agreement": "bool", "quantized_away": "int",
}  # fmt: skip
#: the columns of a transfer records file, and of :func:`load_transfer_records`'s frame
TRANSFER_RECORD_COLUMNS: tuple[str, ...] = (*_LEAD_KINDS, *TRANSFER_RECORD_KINDS)
FOLDER = "transfer_records"


def stopping_rule(attack: str) -> str:
    """``first_success`` when ``attack`` stops each image at its first success, else ``own``."""
    return "first_success" if attack_info(attack).first_success else "own"


def recorded_predictions(records: pd.DataFrame, which: str, stage: str) -> Predictions:
    """The ``which`` ("clean" / "adv") predictions of per-image records, ``stage`` attacked."""
    coarse, fine = (torch.tensor(records[f"{which}_{s}"].to_numpy()) for s in ("coarse", "fine"))
    return Predictions(coarse if stage == "coarse" else fine, coarse, fine)


def transfer_records(
    key: Mapping[str, Any],
    source_records: pd.DataFrame,
    target: str,
    target_hash: str,
    clean: Predictions,
    adv: Predictions,
    *,
    same_input: np.ndarray | None = None,
    input_quantization: str | None = None,
) -> pd.DataFrame:
    """The transfer records of the source row ``key`` on ``target`` (module docstring), as
    :func:`load_transfer_records` reads them back: ``source_records`` are the row's per-image
    records, ``clean`` / ``adv`` the target's predictions on the same images in the same order,
    ``same_input`` (per image: the target's input quantization maps x_adv to x) for a target
    that quantizes its input, ``input_quantization`` what that quantization is."""
    stage = key["stage"]
    # a targeted row's rule judges against each image's recorded target
    targets = source_records.get("target_class")
    criterion = get_criterion(key["success_rule"], stage,
                              target=None if targets is None else targets.to_numpy())  # fmt: skip
    clean, adv = (Predictions(getattr(p, stage), p.coarse, p.fine).cpu() for p in (clean, adv))
    source_clean = recorded_predictions(source_records, "clean", stage)
    n = len(source_records)
    sizes = [len(clean.stage), len(adv.stage), n if same_input is None else len(same_input)]
    if sizes != [n] * 3:
        raise ValueError(f"target {target!r}: {sizes[0]} clean and {sizes[1]} adversarial "
                         f"predictions, {sizes[2]} input checks for {n} images")  # fmt: skip
    if same_input is None:
        quantized = np.full(n, -1, dtype=np.int64)
    else:
        quantized = np.asarray(same_input, dtype=bool).astype(np.int64)
    lead = {
        **{c: key[c] for c in KEY}, "row_id": row_id(key), "target": target,
        "target_hash": target_hash,
        "input_quantization": np.nan if input_quantization is None else input_quantization,
        "stopping_rule": stopping_rule(key["attack"]),
    }  # fmt: skip
    agree = (clean.coarse == source_clean.coarse) & (clean.fine == source_clean.fine)
    values = {
        "index": source_records["index"].to_numpy(np.int64),
        "source_success": source_records["success"].to_numpy(bool),
        "target_success": criterion(clean, adv).numpy(),
        "target_clean_coarse": clean.coarse.numpy().astype(np.int64),
        "target_clean_fine": clean.fine.numpy().astype(np.int64),
        "target_adv_coarse": adv.coarse.numpy().astype(np.int64),
        "target_adv_fine": adv.fine.numpy().astype(np.int64),
        "clean_agreement": agree.numpy(),
        "quantized_away": quantized,
    }
    return pd.DataFrame({**{c: [v] * n for c, v in lead.items()}, **values})


def transfer_records_path(out_dir: str | os.PathLike, rid: str, target: str) -> Path:
    """``out_dir/transfer_records/<row_id>.<target id>.csv.gz`` of source row ``rid`` on
    ``target``."""
    target_id = hashlib.sha256(target.strip().encode()).hexdigest()[:12]
    return Path(out_dir) / FOLDER / f"{rid}.{target_id}.csv.gz"


def write_transfer_records(out_dir: str | os.PathLike, records: pd.DataFrame) -> list[Path]:
    """Write ``records`` (the columns :data:`TRANSFER_RECORD_COLUMNS`), one file per (row,
    target), each atomically; the same records give the same bytes. Returns the paths."""
    missing = [c for c in TRANSFER_RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise UserError(f"transfer records lack the columns {missing}")
    paths = []
    for (rid, target), part in records.groupby(["row_id", "target"], sort=False):
        lead = part.loc[:, list(_LEAD_KINDS)].drop_duplicates()
        if len(lead) != 1:
            raise UserError(f"transfer records of row {rid} on {target!r}: more than one key")
        cells = {c: cell_text(v) for c, v in lead.iloc[0].items()}
        if row_id(lead.iloc[0]) != rid:
            raise UserError(f"transfer records: row_id {rid} is not its key's")
        path = transfer_records_path(out_dir, rid, target)
        paths.append(write_keyed_file(path, "transfer records", cells, part,
                                      TRANSFER_RECORD_KINDS))  # fmt: skip
    return paths


def read_transfer_records_file(path: str | os.PathLike) -> pd.DataFrame:
    """One (row, target) transfer records file, strictly typed and checked: its name is its
    row's and target's, its row_id its key's, its values possible and its ``target_success``
    the row's success rule on its predictions. ValueError naming the file, line and column."""
    path = Path(path)
    frame, rows = read_keyed_file(path, "transfer records", _LEAD_KINDS, TRANSFER_RECORD_KINDS)
    where = f"transfer records file {path}"
    if not rows:
        raise UserError(f"{where} has no images")
    first = rows[0][0]
    row = frame.iloc[0]
    for column in ("target", "target_hash", "stopping_rule", "stage", "success_rule", "attack"):
        if pd.isna(row[column]):
            raise UserError(f"{where}, line {first}, column {column!r}: empty")
    if row["row_id"] != row_id(row):
        raise UserError(f"{where}, line {first}, column 'row_id': {row['row_id']!r} is not its "
                         f"key's ({row_id(row)})")  # fmt: skip
    if path.name != transfer_records_path("", row["row_id"], row["target"]).name:
        raise UserError(f"{where}: the name is not that of row {row['row_id']} on target "
                         f"{row['target']!r}")  # fmt: skip
    check_one_key(rows, len(_LEAD_KINDS), where)
    if row["stopping_rule"] not in STOPPING_RULES:
        raise UserError(f"{where}, line {first}, column 'stopping_rule': "
                         f"{row['stopping_rule']!r} is not one of {STOPPING_RULES}")  # fmt: skip

    def bad(mask: np.ndarray, column: str, problem: str) -> None:
        if mask.any():
            line = rows[int(mask.argmax())][0]
            raise UserError(f"{where}, line {line}, column {column!r}: {problem}")

    bad(frame["index"].duplicated().to_numpy(), "index", "an image that appears twice")
    bad(~frame["quantized_away"].isin((-1, 0, 1)).to_numpy(), "quantized_away",
        "not -1, 0 or 1")  # fmt: skip
    not_applicable = frame["quantized_away"].to_numpy() == -1
    bad(not_applicable != not_applicable[0], "quantized_away",
        "-1 (does not apply) on some images of the target only")  # fmt: skip
    try:
        criterion = get_criterion(row["success_rule"], row["stage"])
    except ValueError as err:
        raise UserError(f"{where}, line {first}: {err}") from None
    if criterion.targeted:  # the targets are in the source records, not here
        return frame
    clean, adv = (_target_predictions(frame, which, row["stage"]) for which in ("clean", "adv"))
    verdict = criterion(clean, adv).numpy()
    bad(verdict != frame["target_success"].to_numpy(), "target_success",
        f"not the success rule {row['success_rule']!r} on the target's predictions")  # fmt: skip
    return frame


def _target_predictions(records: pd.DataFrame, which: str, stage: str) -> Predictions:
    renamed = {f"{which}_{s}": records[f"target_{which}_{s}"] for s in ("coarse", "fine")}
    return recorded_predictions(pd.DataFrame(renamed), which, stage)


def load_transfer_records(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Every transfer record under ``out_dir/transfer_records/``, one row per (source row,
    target, image), in file-name order (row_id, then target id); an empty frame with the
    columns when there are none."""
    files = sorted((Path(out_dir) / FOLDER).glob("*.csv.gz"))
    if not files:
        return empty_keyed_frame(_LEAD_KINDS, TRANSFER_RECORD_KINDS)
    return pd.concat([read_transfer_records_file(f) for f in files], ignore_index=True)


def transfer_summary(records: pd.DataFrame) -> dict[str, Any]:
    """The aggregates of one (row, target)'s records (module docstring); N is the key's
    ``n``."""
    success = records["source_success"].to_numpy(bool)
    fooled = records["target_success"].to_numpy(bool)
    counts = {
        "transfer_fooling_ratio": (fooled.sum(), len(records)),
        "coarse_flipped": (_changed(records, "coarse").sum(), len(records)),
        "fine_flipped": (_changed(records, "fine").sum(), len(records)),
        "source_fooling_ratio": (success.sum(), len(records)),
        "survival": ((success & fooled).sum(), success.sum()),
        "clean_agreement": (records["clean_agreement"].to_numpy(bool).sum(), len(records)),
    }
    out: dict[str, Any] = {"n_source_success": int(success.sum())}
    for name, (k, n) in counts.items():
        lo, hi = share_interval(int(k), int(n))
        out.update({name: int(k) / n if n else np.nan, f"{name}_lo": lo, f"{name}_hi": hi})
    quantized = records["quantized_away"].to_numpy()
    out["quantized_away"] = np.nan if (quantized < 0).any() else int(quantized.sum())
    return out


def _changed(records: pd.DataFrame, level: str) -> np.ndarray:
    return (records[f"target_adv_{level}"] != records[f"target_clean_{level}"]).to_numpy()


def transfer_table(records: pd.DataFrame) -> pd.DataFrame:
    """One ``transfer.csv`` row per (source row, target) of ``records``, in their order: the
    source row's key, ``target``, ``row_id``, the target's hash and input quantization, the
    row's stopping rule, then :func:`transfer_summary`."""
    rows = []
    for _, part in records.groupby(["row_id", "target"], sort=False):
        first = part.iloc[0]
        rows.append({**{c: first[c] for c in (*TRANSFER_KEY, "row_id", "target_hash",
                                              "stopping_rule")},
                     **transfer_summary(part),
                     "input_quantization": first["input_quantization"]})  # fmt: skip
    return pd.DataFrame(rows)
