"""Leaderboard: identity by the full key, strict typed reading (nothing silently rewritten),
pre-flight checks, locked atomic upserts with rejected rows saved, rendering, environment."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import re
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest
from filelock import FileLock

from c2f_attacks import leaderboard as lb
from c2f_attacks.evaluation import METRIC_COLUMNS

OLD_COLUMNS = (
    "model", "dataset", "attack", "stage", "norm", "eps", "steps", "n", "clean_acc_coarse",
    "clean_acc_fine", "fooling_ratio", "success_rate", "linf_mean", "linf_median", "l2_mean",
    "l0_mean", "relevance_shift", "perturbation_in_relevance", "object_share",
    "queries_per_image", "ms_per_image", "images_per_s", "eval_backend", "backend_agreement",
    "device", "seed", "git_commit", "timestamp", "python_version", "torch_version",
    "torchvision_version", "onnxruntime_version", "onnxruntime_package", "c2f_attacks_version",
    "config",
)  # fmt: skip


def row(attack: str = "pgd", stage: str = "coarse", eps: object = 8 / 255, **extra) -> dict:
    base = {
        "model": "shapes-vgg16", "model_hash": "0a1b2c", "dataset": "shapes", "split": "test",
        "n": 256, "seed": 0, "attack": attack, "stage": stage, "protocol": "fixed",
        "success_rule": "stage_changed", "mask": "none", "norm": "linf", "eps": eps, "steps": 10,
        "config": lb.config_string(alpha=2 / 255),
        "eval_backend": "onnxruntime", "device": "cpu", "fooling_ratio": 0.5,
    }  # fmt: skip
    return {**base, **extra}


def test_columns():
    assert set(lb.KEY) <= set(lb.COLUMNS) and set(METRIC_COLUMNS) <= set(lb.COLUMNS)
    assert set(OLD_COLUMNS) <= set(lb.COLUMNS)  # library versions and every old column kept
    assert {"row_id", "mask", "protocol", "success_rule", "split", "model_hash", "fr_fine_any",
            "l2_median",
            "fooling_ratio_lo", "linf_at_fr90", "coarse_flip_share"} <= set(lb.COLUMNS)  # fmt: skip
    assert lb.COLUMNS[:4] == ("model", "model_hash", "dataset", "split")


def test_upsert_replaces_own_row_and_keeps_others(tmp_path):
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row("pgd"), row("fgsm", steps=1), row("pgd", stage="fine")])
    df = lb.upsert_rows(path, [row("pgd", fooling_ratio=0.75)])
    assert len(df) == 3
    assert df[(df.attack == "pgd") & (df.stage == "coarse")].fooling_ratio.tolist() == [0.75]
    back = lb.read_leaderboard(path)
    assert back.attack.tolist() == ["fgsm", "pgd", "pgd"]  # sorted by the key
    assert back.stage.tolist() == ["coarse", "coarse", "fine"]
    assert list(back.columns) == list(lb.COLUMNS)
    assert back.row_id.tolist() == [lb.row_id(r) for r in back.to_dict("records")]
    pd.testing.assert_frame_equal(back, df)


@pytest.mark.parametrize(
    "change",
    [{"split": "train"}, {"n": 8}, {"seed": 5}, {"eval_backend": "torch"}, {"device": "cuda (X)"},
     {"model_hash": "ffff"}, {"mask": "lrp"}, {"protocol": "minimal"},
     {"success_rule": "fine_changed_coarse_kept"}, {"eps": 4 / 255},
     {"config": lb.config_string(alpha=2 / 255 + 1e-9)}],
)  # fmt: skip
def test_any_key_difference_adds_a_row(tmp_path, change):
    # before, a run with -n 8 --split train --seed 5 --backend torch replaced the published row
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row(fooling_ratio=0.1)])
    df = lb.upsert_rows(path, [row(fooling_ratio=0.9, **change)])
    assert sorted(df.fooling_ratio) == [0.1, 0.9]


def test_nan_eps_and_float_formatting_match_the_same_key(tmp_path):
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row(eps=None, fooling_ratio=0.1), row(eps=8 / 255, fooling_ratio=0.2)])
    # NaN, "" and None are one key; 10 == 10.0; a float read back from the CSV equals the original.
    lb.upsert_rows(path, [row(eps=float("nan"), steps=10.0, fooling_ratio=0.3)])
    lb.upsert_rows(path, [row(eps="", fooling_ratio=0.4)])
    lb.upsert_rows(path, [row(eps=float(f"{8 / 255:.12f}"), fooling_ratio=0.5)])
    df = lb.read_leaderboard(path)
    assert len(df) == 2
    assert sorted(df.fooling_ratio.tolist()) == [0.4, 0.5]
    assert math.isnan(df.eps.iloc[0])  # the empty eps sorts first
    line = "\nshapes-vgg16,0a1b2c,shapes,test,pgd,coarse,fixed,none,linf,stage_changed,,10,256,0,"
    assert line in path.read_text()


def test_extra_columns_kept_missing_ones_empty(tmp_path):
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row("pgd", my_metric=1.5)])
    df = lb.upsert_rows(path, [row("fgsm", other="x")])
    assert list(df.columns[-2:]) == ["my_metric", "other"]
    assert df.set_index("attack").loc["pgd", "my_metric"] == 1.5
    assert pd.isna(df.set_index("attack").loc["fgsm", "my_metric"])
    assert df.linf_mean.isna().all() and str(df.misclassified.dtype) == "Int64"


def test_last_duplicate_in_one_call_wins(tmp_path):
    df = lb.upsert_rows(tmp_path / "lb.csv", [row(fooling_ratio=0.1), row(fooling_ratio=0.9)])
    assert df.fooling_ratio.tolist() == [0.9]


def test_text_values_stay_text(tmp_path):
    # pandas would read "NA" as NaN and "0012" as the number 12 by default.
    path = tmp_path / "lb.csv"
    lb.upsert_rows(path, [row(model="NA", git_commit="0012", seed=3)])
    df = lb.upsert_rows(path, [row(model="NA", git_commit="0012", seed=3, fooling_ratio=1.0)])
    assert len(df) == 1
    assert (df.model.iloc[0], df.git_commit.iloc[0], int(df.seed.iloc[0])) == ("NA", "0012", 3)
    assert ",3," in path.read_text()  # whole numbers are written as such, not "3.0"


def test_missing_file_reads_as_empty(tmp_path):
    df = lb.read_leaderboard(tmp_path / "absent.csv")
    assert df.empty and list(df.columns) == list(lb.COLUMNS)


def test_bad_new_rows_are_rejected_before_writing(tmp_path):
    path = tmp_path / "lb.csv"
    with pytest.raises(ValueError, match="attack"):
        lb.upsert_rows(path, [row(attack="")])
    with pytest.raises(ValueError, match=r"\['split'\]"):
        lb.upsert_rows(path, [{k: v for k, v in row().items() if k != "split"}])
    with pytest.raises(ValueError, match="eps"):
        lb.upsert_rows(path, [row(eps="8/255")])
    with pytest.raises(ValueError, match=r"leaderboard row 1, column 'fooling_ratio': 'high'"):
        lb.upsert_rows(path, [row(), row("fgsm", fooling_ratio="high")])
    with pytest.raises(ValueError, match="column 'n': '8.5' is not a whole number"):
        lb.upsert_rows(path, [row(n=8.5)])
    with pytest.raises(ValueError, match="column 'backend_fooling_ratio': 'n/a'"):
        lb.upsert_rows(path, [row(backend_fooling_ratio="n/a")])  # a schema column, typed
    assert not path.exists() and not list(tmp_path.iterdir())


def _good() -> str:
    """The text of a valid two-row board, as upsert_rows writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "leaderboard.csv"
        lb.upsert_rows(path, [row("pgd"), row("fgsm", steps=1)])
        return path.read_text()


def _cell(text: str, line: int, column: str, value: str) -> str:
    lines = text.splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[line - 1].rstrip("\n").split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells) + "\n"
    return "".join(lines)


W = len(lb.COLUMNS)
CORRUPT = {
    "BOM": (lambda t: "\ufeff" + t, r"line 1: starts with a byte-order mark"),
    "semicolons": (lambda t: t.replace(",", ";"), r"line 1: fields are separated by ';'"),
    "empty": (lambda t: "", r"is empty"),
    "header": (lambda t: t.replace("model_hash", "model", 1), r"line 1: column 'model' appears"),
    "no key": (lambda t: t.replace("split", "partition", 1), r"line 1: lacks the key columns"),
    "fields": (lambda t: t.replace("\n", ",x\n", 2).replace(",x", "", 1), rf"line 2: {W + 1} "),
    "blank line": (lambda t: t.replace("\n", "\n\n", 1), r"line 2: blank line"),
    "eps": (lambda t: _cell(t, 2, "eps", "abc"), r"line 2, column 'eps': 'abc' is not a number"),
    "n": (lambda t: _cell(t, 3, "n", "many"), r"line 3, column 'n': 'many' is not a whole"),
    "seed": (lambda t: _cell(t, 2, "seed", "0.5"), r"line 2, column 'seed': '0.5' is not a whole"),
    "steps": (lambda t: _cell(t, 3, "steps", "ten"), r"line 3, column 'steps': 'ten'"),
    "metric": (lambda t: _cell(t, 2, "linf_mean", "x"), r"line 2, column 'linf_mean': 'x'"),
    "required": (lambda t: _cell(t, 2, "split", ""), r"line 2, column 'split': empty"),
    "row_id": (lambda t: _cell(t, 2, "dataset", "other"), r"line 2, column 'row_id'"),
    "same key": (lambda t: t + t.splitlines(keepends=True)[1], r"line 4: same key as line 2"),
    "quote": (lambda t: t.replace("\n", '\n"', 2).replace('"', "", 1), r"line \d+: "),
}


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_board_is_refused_naming_file_line_and_column(tmp_path, name):
    edit, message = CORRUPT[name]
    path = tmp_path / "leaderboard.csv"
    content = edit(_good()).encode()
    path.write_bytes(content)
    for call in (lb.read_leaderboard, lb.check_leaderboard):
        with pytest.raises(ValueError, match=message) as err:
            call(path)
        assert f"leaderboard {path}" in str(err.value)
    with pytest.raises(lb.LeaderboardWriteError, match=message) as err:
        lb.upsert_rows(path, [row("lrpc")])
    assert path.read_bytes() == content  # nothing rewritten
    rejected = err.value.rejected
    assert rejected.parent == tmp_path and re.fullmatch(
        r"leaderboard\.rejected-\d{8}T\d{6}Z\.csv", rejected.name
    )
    assert str(rejected) in str(err.value)
    assert lb.read_leaderboard(rejected).attack.tolist() == ["lrpc"]  # the rows are not lost


def test_non_utf8_bytes_named_with_line(tmp_path):
    path = tmp_path / "leaderboard.csv"
    text = _good().encode()
    path.write_bytes(text.replace(b"shapes-vgg16,0a1b2c,shapes,test,fgsm", b"shapes-vgg\xe916", 1))
    with pytest.raises(ValueError, match=rf"leaderboard {path}, line 2, character 11: byte 0xe9"):
        lb.read_leaderboard(path)


def test_non_numeric_cell_is_not_silently_emptied(tmp_path):
    # before: a non-numeric eps was rewritten as empty (exit 0), turning a fixed-eps row into a
    # minimal-eps one
    path = tmp_path / "leaderboard.csv"
    path.write_text(_cell(_good(), 2, "eps", "8/255"))
    before = path.read_bytes()
    with pytest.raises(lb.LeaderboardWriteError, match="'8/255' is not a number"):
        lb.upsert_rows(path, [row("lrpc")])
    assert path.read_bytes() == before


def test_an_infinite_budget_round_trips_exactly_and_strictly(tmp_path):
    # a budget the row never reaches is +inf (censored budgets): written as "inf", read back
    # as +inf, and no other spelling of a number is taken for one
    path = tmp_path / "leaderboard.csv"
    inf = math.inf
    lb.upsert_rows(path, [row(linf_median=inf, linf_median_hi=inf, linf_at_fr90=inf,
                              linf_median_lo=0.0313725490196, l2_median=2.5)])  # fmt: skip
    text = path.read_text()
    back = lb.read_leaderboard(path)
    assert back.linf_median.tolist() == back.linf_at_fr90.tolist() == [inf]
    assert back.linf_median_lo.tolist() == [0.0313725490196] and back.l2_median.tolist() == [2.5]
    assert _cell(text, 2, "linf_median", "inf") == text
    lb.upsert_rows(path, [row("fgsm")])  # the kept row is written back as it was
    assert lb.read_leaderboard(path).set_index("attack").loc["pgd", "linf_median"] == inf
    assert json.loads(lb.render_table(back, ["linf_median"], fmt="json")) == [
        {"linf_median": "inf"}  # JSON has no infinity
    ]
    assert "inf" in lb.render_table(back, ["linf_median"], color=False)
    for spelling in ("Infinity", "INF", "nan", "NaN", " 2.5", "2_5", "0x1p-2"):
        path.write_text(_cell(text, 2, "l2_median", spelling))
        message = f"line 2, column 'l2_median': {spelling!r} is not a number"
        with pytest.raises(ValueError, match=re.escape(message)):
            lb.read_leaderboard(path)


def test_kept_rows_are_written_back_cell_for_cell(tmp_path):
    path = tmp_path / "leaderboard.csv"
    path.write_text(_cell(_good(), 2, "fooling_ratio", "0.50"))  # not how we would write 0.5
    lb.upsert_rows(path, [row("lrpc")])
    text = path.read_text()
    assert ",0.50," in text and "lrpc" in text


def test_failure_while_writing_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row("pgd"), row("fgsm")])
    before = path.read_bytes()

    def half_write(self, text, **kwargs):
        with open(self, "w") as f:
            f.write(text[:17])  # cut off mid-header, as a crash would
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", half_write)
    with pytest.raises(lb.LeaderboardWriteError, match="No space left") as err:
        lb.upsert_rows(path, [row("lrpc", eps=None)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["leaderboard.csv", "leaderboard.csv.lock", err.value.rejected.name]
    assert "saved in" in str(err.value)


def test_lock_held_too_long(tmp_path, capsys):
    path = tmp_path / "lb.csv"
    with FileLock(f"{path}.lock"):
        with pytest.raises(lb.LeaderboardWriteError, match="still held after 0.2 s") as err:
            lb.upsert_rows(path, [row()], timeout=0.2)
        with pytest.raises(TimeoutError, match="lb.csv.lock"):
            lb.check_leaderboard(path, timeout=0.1)
    assert not path.exists() and err.value.rejected.exists()
    assert capsys.readouterr().err.count("waiting up to") == 2  # one line per wait


def _hold(lock_path: str, taken: threading.Event, waiting: threading.Event,
          releasing: threading.Event):  # fmt: skip
    """Hold the lock until the other thread waits for it."""
    with FileLock(lock_path):  # filelock's locks belong to the thread that took them
        taken.set()
        waiting.wait(timeout=60)
        releasing.set()


def test_check_leaderboard_waits_for_the_lock_with_one_message(tmp_path, capsys, monkeypatch):
    """It returns only after the holder let go, and within its timeout (it would raise
    otherwise). An order of events, not a timing: the holder lets go once check_leaderboard
    waits for the lock, however slowly the machine got there."""
    path = tmp_path / "lb.csv"
    lb.upsert_rows(path, [row()])
    taken, waiting, releasing = threading.Event(), threading.Event(), threading.Event()

    class WatchedLock(FileLock):
        def acquire(self, timeout=None, **kwargs):
            if timeout:  # the wait that follows the message (the first try has timeout 0)
                waiting.set()
            return super().acquire(timeout=timeout, **kwargs)

    monkeypatch.setattr("c2f_attacks.leaderboard.storage.FileLock", WatchedLock)
    holder = threading.Thread(target=_hold, args=(f"{path}.lock", taken, waiting, releasing))
    holder.start()
    taken.wait()
    board = lb.check_leaderboard(path, timeout=60)
    assert releasing.is_set()
    holder.join()
    assert len(board) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"leaderboard {path} is being written" in err


def test_check_leaderboard_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=f"leaderboard folder {blocker} is not writable"):
        lb.check_leaderboard(blocker / "leaderboard.csv")
    assert lb.check_leaderboard(tmp_path / "new" / "lb.csv").empty


def _writer(path: str, attack: str, count: int, barrier) -> None:
    barrier.wait()
    for i in range(count):
        lb.upsert_rows(path, [row(attack, steps=i, fooling_ratio=i / count)])


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "leaderboard.csv")
    count = 5
    ctx = mp.get_context("spawn")  # fork after pandas/threads is unsafe; spawn works everywhere
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, a, count, barrier)) for a in ("pgd", "fgsm")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    df = lb.read_leaderboard(path)
    assert len(df) == 2 * count
    assert sorted(df[df.attack == "pgd"].steps.tolist()) == list(range(count))
    assert sorted(df[df.attack == "fgsm"].steps.tolist()) == list(range(count))


def test_environment_columns():
    env = lb.environment_columns("cpu")
    assert env["device"] == "cpu"
    assert env["git_commit"]  # a short hash, or "unknown" outside a git checkout
    assert env["timestamp"].endswith("+00:00")
    assert env["torch_version"] and env["c2f_attacks_version"]
    assert env["onnxruntime_package"] in ("onnxruntime", "onnxruntime-gpu")
    assert set(env) <= set(lb.COLUMNS)


def test_config_string_is_canonical_and_full_precision():
    a = lb.config_string(mode="fixed", alpha=2 / 255, random_start=True)
    assert a == lb.config_string(random_start=True, alpha=2 / 255, mode="fixed")
    assert a == "alpha=0.00784313725490196;mode=fixed;random_start=1"
    # 4 significant digits made these one configuration (and one leaderboard row)
    assert lb.config_string(lam=0.12345) != lb.config_string(lam=0.12346)
    with pytest.raises(ValueError, match=";"):
        lb.config_string(mode="a;b")


def _wide_rows() -> pd.DataFrame:
    rows = [
        row(a, stage=s, protocol=m, mask=k, eps=None if m != "fixed" else 8 / 255,
            fooling_ratio=0.59375, fooling_ratio_lo=0.53125, fooling_ratio_hi=0.65625,
            linf_median=0.1012345, l2_median=1.2345, object_share=0.3456,
            queries_per_image=1234.5, ms_per_image=12.345)
        for a, m, k in [("fgsm", "fixed", "none"), ("pgd", "minimal", "none"),
                        ("lrpc", "first_success", "gradient_x_input"),
                        ("torchattacks:AutoAttack", "minimal", "least_relevant")]
        for s in ("coarse", "fine")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_render_rich_table_fits_100_columns():
    df = _wide_rows()
    text = lb.render_table(df, color=False)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "\x1b[" not in text
    header = lines[0].split()
    assert header[:4] == ["attack", "stage", "protocol", "mask"] and "FR" in header
    assert "0.594" in text and " 1234\n" in text and "lrpc" in text and "FR = fooling_ratio" in text
    assert "…" not in text and "ack" in text.split()  # text wraps, never cut: "torchattac|ks..."
    coloured = lb.render_table(df, color=True)
    assert "\x1b[" in coloured
    assert max(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in coloured.splitlines()) <= 100
    every = lb.render_table(df, columns=list(df.columns), color=False)  # too many: text wraps
    assert max(len(line) for line in every.splitlines()) <= 100


def test_render_machine_formats():
    df = _wide_rows()
    records = json.loads(lb.render_table(df, fmt="json"))
    assert len(records) == 8 and records[2]["eps"] is None
    assert records[0]["eps"] == 8 / 255 and records[0]["n"] == 256  # full precision, ints
    csv_text = lb.render_table(df, columns=["attack", "eps"], fmt="csv")
    assert csv_text.splitlines()[:2] == ["attack,eps", f"fgsm,{8 / 255!r}"]
    md = lb.render_table(df.assign(note="a|b"), columns=["attack", "eps", "note"], fmt="markdown")
    lines = md.splitlines()
    assert lines[0].split("|")[1].strip() == "attack" and "a\\|b" in md
    assert lines[1].startswith("|---") and "--:|" in lines[1]
    assert len({len(line) for line in lines}) == 1  # padded: columns line up in a terminal
    assert "fooling_ratio" in lb.render_table(df, fmt="markdown")
    assert lb.render_table(df.to_dict("records"), ["attack"], fmt="csv").startswith("attack\n")
    with pytest.raises(ValueError, match="format"):
        lb.render_table(df, fmt="html")
