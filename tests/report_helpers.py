"""Small results folders for the report tests, written with the library's own writers (strict
leaderboard, per-image records), so they are exactly what ``c2f-bench run`` leaves behind, in
milliseconds and with numbers chosen by the test."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from c2f_attacks.evaluation.records import KEY, RECORD_KINDS, write_records
from c2f_attacks.evaluation.transfer import TRANSFER_KEY
from c2f_attacks.leaderboard import upsert_rows

N = 8


def records(success: list[bool], linf: list[float], masked: bool,
            l0: list[float] | None = None) -> pd.DataFrame:  # fmt: skip
    """Records of ``len(success)`` images with the given outcomes and l-inf norms (and l0
    shares: a masked row's 0.1, else 1, where not given)."""
    n = len(success)
    ok = np.array(success, dtype=bool)
    frame = {c: np.zeros(n, dtype={"int": "int64", "float": "float64", "bool": bool}[k])
             for c, k in RECORD_KINDS.items()}  # fmt: skip
    frame["index"] = np.arange(n)
    frame["success"] = ok
    frame["coarse_flipped"] = ok
    frame["correct"] = np.ones(n, dtype=bool)
    frame["first_success_step"] = np.where(ok, 3, -1)
    frame["linf"] = np.where(ok, linf, np.nan)
    frame["l2"] = np.where(ok, np.array(linf) * 10, np.nan)
    frame["l0"] = np.where(ok, (0.1 if masked else 1.0) if l0 is None else l0, np.nan)
    frame["queries"] = np.full(n, 20)
    return pd.DataFrame(frame)


def key(model: str, attack: str, stage: str, protocol: str, mask: str, eps: float | None,
        n: int = N) -> dict[str, Any]:  # fmt: skip
    rule = "fine_changed_coarse_kept" if stage == "fine" else "stage_changed"
    return {"model": model, "model_hash": "0123456789ab", "dataset": "shapes", "split": "test",
            "n": n, "seed": 0, "attack": attack, "stage": stage, "protocol": protocol,
            "success_rule": rule, "mask": mask, "norm": "linf", "eps": eps, "steps": 10,
            "config": "", "eval_backend": "torch", "device": "cpu"}  # fmt: skip


def add_row(folder: Path, row_key: dict[str, Any], success: list[bool], linf: list[float],
            l0: list[float] | None = None, **metrics: Any) -> dict[str, Any]:  # fmt: skip
    """Write one leaderboard row (its metrics given by the test) and its records."""
    write_records(folder, row_key, records(success, linf, row_key["mask"] != "none", l0))
    values = np.array([v for v, s in zip(linf, success) if s])
    row = {**row_key, "clean_acc_coarse": 1.0, "clean_acc_fine": 1.0,
           "fooling_ratio": float(np.mean(success)),
           "linf_median": float(np.median(values)) if len(values) else float("nan"),
           "queries_per_image": 20.0, "git_commit": "abc1234", **metrics}  # fmt: skip
    return upsert_rows(folder / "leaderboard.csv", [row]).iloc[-1].to_dict()


def toy_run(folder: Path, model: str = "toy-model", n: int = N,
            lrp: float = 0.1, random: float = 0.3) -> Path:  # fmt: skip
    """A run of one model: LRPC with the lrp, gradient and random masks and PGD minimal and
    fixed on the coarse stage; the masks' median l-inf ``lrp``, ``lrp - 0.01`` and ``random``
    with intervals +-0.01."""
    all_fooled = [True] * n
    for mask, median in (("lrp", lrp), ("gradient", lrp - 0.01), ("random", random)):
        add_row(folder, key(model, "lrpc", "coarse", "first_success", mask, None, n), all_fooled,
                [median] * n, linf_median_lo=median - 0.01, linf_median_hi=median + 0.01,
                fooling_ratio_lo=0.9, fooling_ratio_hi=1.0, l0_mean=0.1,
                linf_at_fr50=median)  # fmt: skip
    add_row(folder, key(model, "pgd", "coarse", "minimal", "none", 64 / 255, n), all_fooled,
            [0.03] * n, linf_median_lo=0.02, linf_median_hi=0.04, l0_mean=1.0)  # fmt: skip
    half = [i % 2 == 0 for i in range(n)]
    add_row(folder, key(model, "pgd", "coarse", "fixed", "none", 8 / 255, n), half,
            [8 / 255] * n, fooling_ratio_lo=0.25, fooling_ratio_hi=0.75)  # fmt: skip
    return folder


def add_transfer(folder: Path, target: str, ratio: float) -> None:
    """A transfer.csv row per leaderboard row onto ``target``, every ratio ``ratio``."""
    board = pd.read_csv(folder / "leaderboard.csv")
    rows = [{**{c: r[c] for c in KEY if c in r and pd.notna(r[c])}, "target": target,
             "transfer_fooling_ratio": ratio, "transfer_fooling_ratio_lo": ratio / 2,
             "transfer_fooling_ratio_hi": min(1.0, ratio * 2), "survival": ratio}
            for r in board.to_dict("records")]  # fmt: skip
    upsert_rows(folder / "transfer.csv", rows, key=TRANSFER_KEY)


# ----------------------------------------------------------------------------- the browser
def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def dump_dom(page: Path, fragment: str = "") -> str:
    """The page's DOM after its scripts ran, from headless Chromium (``--dump-dom``)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class BoardRows(HTMLParser):
    """The leaderboard rows of a dumped page: ``rows`` = [(row id, [cell texts])], and the
    ``<html>`` element's attributes."""

    def __init__(self, dom: str):
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self.details: list[str] = []
        self.root: dict[str, str | None] = {}
        self._cell: list[str] | None = None
        self._detail = False  # inside a detail row: its cells are not the row's
        self._board = False  # inside the leaderboard table
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.root = attrs
        elif tag == "table":
            self._board = attrs.get("id") == "board"
        elif tag == "tr" and self._board:
            self._detail = "data-detail" in attrs
            if "data-row" in attrs:
                self.rows.append((attrs["data-row"], []))
            if self._detail:
                self.details.append(attrs["data-detail"])
        elif tag == "td" and self._board and self.rows and not self._detail:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._board = False
