"""The command line: the main job end to end, its reruns, torchrun sharding and its errors."""

import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from c2f_attacks.cli import main

# Columns that are measurements of time or provenance, not results.
VOLATILE = ["ms_per_image", "images_per_s", "timestamp", "git_commit"]
SMALL_RUN = ["--num-images", "12", "--batch-size", "4", "--attacks", "fgsm", "pgd", "lrpc", "lrpf",
             "--modes", "fixed", "--quiet"]  # fmt: skip


def _run(out, *extra) -> pd.DataFrame:
    assert main(["run", *SMALL_RUN, "--out", str(out), *extra]) == 0
    return pd.read_csv(out / "leaderboard.csv")


def test_run_writes_leaderboard_and_figures_and_reruns_identically(tmp_path, capsys):
    first = _run(tmp_path, "--backend", "onnxruntime")
    assert set(zip(first.attack, first.stage)) == {
        ("fgsm", "coarse"), ("fgsm", "fine"), ("pgd", "coarse"), ("pgd", "fine"),
        ("lrpc", "coarse"), ("lrpf", "fine"),
    }  # fmt: skip
    fixed = first[first.attack.isin(["fgsm", "pgd"])]
    assert (fixed.linf_mean.fillna(0) <= fixed.eps + 1e-6).all()
    assert (first.backend_agreement == 1.0).all()
    assert (tmp_path / "figures" / "lrpc_coarse.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "| lrpf" in out and "leaderboard:" in out

    again = _run(tmp_path, "--backend", "onnxruntime")
    assert len(again) == len(first)  # upserted, not appended
    pd.testing.assert_frame_equal(first.drop(columns=VOLATILE), again.drop(columns=VOLATILE))


def test_two_rank_torchrun_equals_one_process(tmp_path):
    single = _run(tmp_path / "one", "--backend", "torch", "--no-figures")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `python -m torch.distributed.run` is torchrun; `-m c2f_attacks.cli` is c2f-bench. Neither
    # needs the virtual environment's bin/ on PATH.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "-m", "c2f_attacks.cli", "run", *SMALL_RUN, "--backend", "torch", "--no-figures",
           "--out", str(tmp_path / "two")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = pd.read_csv(tmp_path / "two" / "leaderboard.csv")
    pd.testing.assert_frame_equal(single.drop(columns=VOLATILE), sharded.drop(columns=VOLATILE))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "argument --n/--num-images: expected a positive integer, got 0"),
        (["--attacks", "cw"], "unknown attack 'cw'"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--model", "missing.pt"], "checkpoint missing.pt does not exist"),
        (["--stages", "fine", "--attacks", "lrpc"], "LRPC attacks the coarse stage only"),
    ],
)
def test_run_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "c2f_attacks.cli", "run", "--out", str(out), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (out / "leaderboard.csv").exists()


def test_corrupt_model_and_unwritable_out(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["run", "--model", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "bad.pt cannot be read" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--out", str(blocker / "sub"), "--n", "2", "--quiet"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_accuracy_explain_and_leaderboard_commands(tmp_path, capsys):
    assert main(["accuracy", "--n", "60"]) == 0
    found = re.search(r"coarse accuracy ([\d.]+), fine accuracy ([\d.]+)", capsys.readouterr().out)
    coarse, fine = float(found[1]), float(found[2])
    assert coarse >= 0.95 and fine >= 0.95
    png = tmp_path / "explain.png"
    assert main(["explain", "--n", "2", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    assert main(["leaderboard", str(tmp_path / "none.csv")]) == 2
    assert "no leaderboard rows" in capsys.readouterr().err
