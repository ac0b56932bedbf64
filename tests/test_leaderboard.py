"""Leaderboard CSV: upsert by key, NaN-robust keys, corrupt files kept, concurrent and atomic
writes.
"""

from __future__ import annotations

import math
import multiprocessing as mp

import pandas as pd
import pytest
from filelock import FileLock, Timeout

from c2f_attacks import leaderboard as lb


def row(attack: str = "PGD", stage: str = "coarse", eps: object = 8 / 255, **extra) -> dict:
    minimal = eps is None or eps == "" or (isinstance(eps, float) and math.isnan(eps))
    base = {
        "model": "shapes-vgg16",
        "dataset": "shapes",
        "attack": attack,
        "stage": stage,
        "norm": "linf",
        "eps": eps,
        "steps": 10,
        "config": lb.config_string(mode="minimal" if minimal else "fixed", alpha=2 / 255),
        "n": 64,
        "fooling_ratio": 0.5,
    }
    return {**base, **extra}


def test_columns_start_with_design_order_and_key_is_documented():
    assert lb.COLUMNS[:8] == ("model", "dataset", "attack", "stage", "norm", "eps", "steps", "n")
    assert set(lb.KEY) <= set(lb.COLUMNS)
    assert {"torch_version", "onnxruntime_version", "c2f_attacks_version", "config"} <= set(
        lb.COLUMNS
    )


def test_upsert_replaces_own_row_and_keeps_others(tmp_path):
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row("PGD"), row("FGSM", steps=1), row("PGD", stage="fine")])
    df = lb.upsert_rows(path, [row("PGD", fooling_ratio=0.75)])
    assert len(df) == 3
    pgd = df[(df.attack == "PGD") & (df.stage == "coarse")]
    assert pgd.fooling_ratio.tolist() == [0.75]
    back = lb.read_leaderboard(path)
    assert back.attack.tolist() == ["FGSM", "PGD", "PGD"]  # sorted by model, dataset, attack, stage
    assert back.stage.tolist() == ["coarse", "coarse", "fine"]
    assert list(back.columns[: len(lb.COLUMNS)]) == list(lb.COLUMNS)


def test_key_distinguishes_config_and_eps(tmp_path):
    path = tmp_path / "leaderboard.csv"
    df = lb.upsert_rows(path, [row(eps=8 / 255), row(eps=4 / 255), row(eps=None)])
    assert len(df) == 3  # fixed at two budgets and minimal-eps are three configurations


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
    assert "\n" + "shapes-vgg16,shapes,PGD,coarse,linf,,10" in path.read_text()


def test_extra_columns_kept_missing_ones_empty(tmp_path):
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row("PGD", my_metric=1.5)])
    df = lb.upsert_rows(path, [row("FGSM", other="x")])
    assert list(df.columns[-2:]) == ["my_metric", "other"]
    assert df.set_index("attack").loc["PGD", "my_metric"] == 1.5
    assert pd.isna(df.set_index("attack").loc["FGSM", "my_metric"])
    assert df.linf_mean.isna().all()


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


def test_row_without_required_key_is_rejected_before_writing(tmp_path):
    path = tmp_path / "lb.csv"
    with pytest.raises(ValueError, match="attack"):
        lb.upsert_rows(path, [row(attack="")])
    with pytest.raises(ValueError, match="eps"):
        lb.upsert_rows(path, [row(eps="8/255")])
    assert not path.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("model,dataset,attack\nm,d,a\n", "lacks the key columns"),
        ("", "empty"),
        (",".join(lb.KEY) + "\nm,d,a,coarse,linf,0.03\n", "record 2 has 6 fields"),
        (",".join(lb.KEY) + '\nm,"d,a\n', "fields"),
    ],
)
def test_corrupt_csv_is_not_overwritten(tmp_path, content, message):
    path = tmp_path / "leaderboard.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        lb.upsert_rows(path, [row()])
    assert str(path) in str(err.value)
    assert path.read_text() == content


def test_binary_garbage_is_not_overwritten(tmp_path):
    path = tmp_path / "leaderboard.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        lb.upsert_rows(path, [row()])
    assert path.read_bytes() == b"\xff\xfe\x00garbage"


def test_failure_while_writing_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "leaderboard.csv"
    lb.upsert_rows(path, [row("PGD"), row("FGSM")])
    before = path.read_bytes()

    def half_write(self, target, **kwargs):
        with open(target, "w") as f:
            f.write("model,dataset,att")  # cut off mid-header, as a crash would
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_write)
    with pytest.raises(OSError, match="disk full"):
        lb.upsert_rows(path, [row("LRPC", eps=None)])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.csv", "leaderboard.csv.lock"]


def test_waits_for_the_lock(tmp_path):
    path = tmp_path / "lb.csv"
    with FileLock(f"{path}.lock"), pytest.raises(Timeout):
        lb.upsert_rows(path, [row()], timeout=0.2)
    assert not path.exists()


def _writer(path: str, attack: str, count: int, barrier) -> None:
    barrier.wait()
    for i in range(count):
        lb.upsert_rows(path, [row(attack, steps=i, fooling_ratio=i / count)])


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "leaderboard.csv")
    count = 15
    ctx = mp.get_context("spawn")  # fork after pandas/threads is unsafe; spawn works everywhere
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, a, count, barrier)) for a in ("PGD", "FGSM")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    df = lb.read_leaderboard(path)
    assert len(df) == 2 * count
    assert sorted(df[df.attack == "PGD"].steps.tolist()) == list(range(count))
    assert sorted(df[df.attack == "FGSM"].steps.tolist()) == list(range(count))


def test_environment_columns():
    env = lb.environment_columns("cpu")
    assert env["device"] == "cpu"
    assert env["git_commit"]  # a short hash, or "unknown" outside a git checkout
    assert env["timestamp"].endswith("+00:00")
    assert env["torch_version"] and env["c2f_attacks_version"]
    assert env["onnxruntime_package"] in ("onnxruntime", "onnxruntime-gpu")
    assert set(env) <= set(lb.COLUMNS)


def test_config_string_is_canonical():
    a = lb.config_string(mode="fixed", alpha=2 / 255, random_start=True)
    assert a == lb.config_string(random_start=True, alpha=2 / 255, mode="fixed")
    assert a == "alpha=0.007843;mode=fixed;random_start=1"
    with pytest.raises(ValueError, match=";"):
        lb.config_string(mode="a;b")


def test_format_table(tmp_path):
    df = lb.upsert_rows(tmp_path / "lb.csv", [row("PGD"), row("LRPC", eps=None, note="a|b")])
    text = lb.format_table(df, columns=["attack", "eps", "fooling_ratio", "note"])
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "attack"
    assert lines[1].startswith("|---") and lines[1].endswith(":|------|")
    assert "0.03137" in text and "a\\|b" in text
    assert len({len(line) for line in lines}) == 1  # padded: columns line up in a terminal
    assert "fooling_ratio" in lb.format_table(df)
