"""The command line: run, compare, leaderboard, train, accuracy, explain; errors and exits."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from c2f_attacks.cli import main
from c2f_attacks.interrupts import Interrupted
from c2f_attacks.leaderboard import read_leaderboard
from c2f_attacks.leaderboard.select import select_one
from c2f_attacks.models import load_model
from c2f_attacks.models.zoo import save_checkpoint
from c2f_attacks.runner.preflight import COMMITTED_RESULTS
from c2f_attacks.train import accuracy
from tests.conftest import tiny_vgg

# Columns that are measurements of time or provenance, not results.
VOLATILE = ["ms_per_image", "images_per_s", "timestamp", "git_commit"]
SMALL_RUN = ["--model", "shapes-vgg16", "-n", "6", "--batch-size", "4", "--set", "steps=3",
             "refresh=2", "pgd.steps=2", "--search-steps", "2", "--quiet"]  # fmt: skip


def _run(out, *extra) -> pd.DataFrame:
    assert main(["run", *SMALL_RUN, "--out", str(out), *extra]) == 0
    return pd.read_csv(out / "leaderboard.csv")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_run_prints_a_table_and_reruns_identically(tmp_path, capsys):
    args = ("--attacks", "fgsm,lrpc", "--masks", "lrp", "random", "--no-figures")
    first = _run(tmp_path, *args)
    assert set(zip(first.attack, first.stage, first["mask"])) == {
        ("fgsm", "coarse", "none"), ("fgsm", "fine", "none"),
        ("lrpc", "coarse", "lrp"), ("lrpc", "coarse", "random"),
    }  # fmt: skip
    out = capsys.readouterr().out
    header = "shapes-vgg16 on shapes/test, 6 images, protocol minimal (success: coarse: "
    assert header in out and "leaderboard:" in out
    table = out.split("):\n")[1].split("shapes-vgg16 on")[0]
    assert "fgsm" in table and max(len(line) for line in table.splitlines()) <= 100
    assert table.splitlines()[0].split()[0] == "attack"  # one model: no model column
    again = _run(tmp_path, *args)
    pd.testing.assert_frame_equal(first.drop(columns=VOLATILE), again.drop(columns=VOLATILE))


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown"])
def test_machine_formats_keep_stdout_parseable(tmp_path, capsys, fmt):
    _run(tmp_path, "--attacks", "fgsm", "--stages", "coarse", "--protocol", "fixed",
         "--no-figures", "--format", fmt)  # fmt: skip
    out = capsys.readouterr().out
    if fmt == "csv":
        assert pd.read_csv(io.StringIO(out))["attack"].tolist() == ["fgsm"]
    elif fmt == "json":
        assert [row["attack"] for row in json.loads(out)] == ["fgsm"]
    else:
        assert out.lstrip().startswith("|") and "fgsm" in out


def test_config_file_sweep_from_the_command_line(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text('attacks = ["fgsm"]\nstages = ["coarse"]\nprotocols = ["fixed"]\n'
                      'eps = [0.01, 0.02]\nfigures = false\n')  # fmt: skip
    board = _run(tmp_path, "--config", str(config))
    assert sorted(board["eps"]) == [0.01, 0.02]
    bad = tmp_path / "bad.toml"
    bad.write_text("epsilon = 1\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench run: error: config file ") and "'epsilon'" in line
    assert str(bad) in line


def test_compare_prints_paired_differences(tmp_path, capsys):
    _run(tmp_path, "--attacks", "lrpc", "--masks", "lrp", "random", "--no-figures")
    capsys.readouterr()
    a, b = "lrpc:lrp:coarse:minimal", "shapes-vgg16/lrpc:random:coarse:minimal"
    args = ["compare", str(tmp_path), a, b, "--pair", a, "lrpc:lrp:coarse:fixed"]
    assert main([*args, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    metrics = ["fooling_ratio", "linf_median", "l2_median", "l0_median"]
    assert table["metric"].tolist() == metrics * 2
    assert table["row_a"].tolist() == [a] * len(table) and table["n_images"][0] == 6
    assert {"difference", "lo", "hi", "test", "p_value", "p_holm"} <= set(table.columns)
    assert (table["p_holm"] >= table["p_value"]).all()
    assert main(["compare", str(tmp_path), "lrpc:lrp", "pgd:none"]) == 2
    line = _error_line(capsys)
    assert "row 'lrpc:lrp' matches 2 rows" in line and "lrpc:lrp:coarse:fixed" in line
    assert main(["compare", str(tmp_path), a, "pgd:none"]) == 2
    assert "row 'pgd:none' matches no row" in _error_line(capsys)


ONE_ROW = ("-n", "2", "--attacks", "fgsm", "--stages", "coarse", "--protocol", "fixed", "--quiet")


def test_two_models_keep_both_sets_of_rows_records_and_figures(tmp_path, capsys):
    models = ["shapes-vgg16", "shapes-vgg16-at"]
    assert main(["run", *ONE_ROW, "--model", ",".join(models), "--out", str(tmp_path)]) == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert board["model"].tolist() == models and board["model_hash"].nunique() == 2
    assert len(list((tmp_path / "records").glob("*.csv.gz"))) == 2
    figures = [tmp_path / "figures" / m / name for m in models
               for name in ("fgsm_coarse_fixed.png", "budget_coarse.png")]  # fmt: skip
    assert all(f.stat().st_size > 5_000 for f in figures)
    assert figures[0].read_bytes() != figures[2].read_bytes()  # each model drew its own
    out = capsys.readouterr().out
    assert "shapes-vgg16, shapes-vgg16-at on shapes/test, 2 images, protocol fixed" in out
    lines = out.split("):\n")[1].split("leaderboard:")[0].splitlines()
    assert lines[0].split()[:2] == ["model", "attack"]  # the column that tells the rows apart
    assert [line.split()[0] for line in lines[2:4]] == models  # one line each: nothing wraps
    assert max(len(line) for line in lines) <= 100 + len("  shapes-vgg16-at")  # its own room


def test_the_default_run_covers_both_shipped_models(tmp_path):
    assert main(["run", *ONE_ROW, "--no-figures", "--out", str(tmp_path)]) == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert board["model"].tolist() == ["shapes-vgg16", "shapes-vgg16-at"]


def test_the_default_run_adds_its_targeted_part_until_options_choose_the_rows(monkeypatch):
    """`c2f-bench run` alone: the untargeted part and the random-target part for every model,
    into one folder; --model applies to both; --attacks (or --config) runs what it chooses."""
    calls = []
    monkeypatch.setattr("c2f_attacks.runner.run_all",
                        lambda configs: calls.append(configs) or pd.DataFrame())  # fmt: skip
    assert main(["run", "-n", "2", "--out", "o"]) == 0
    parts = [(c.model, tuple(c.targets), len(c.plans()), c.out, c.n) for c in calls[-1]]
    assert parts == [("shapes-vgg16", ("none",), 20, "o", 2),
                     ("shapes-vgg16-at", ("none",), 20, "o", 2),
                     ("shapes-vgg16", ("random",), 4, "o", 2),
                     ("shapes-vgg16-at", ("random",), 4, "o", 2)]  # fmt: skip
    assert main(["run", "--model", "shapes-vgg16-at"]) == 0
    assert [(c.model, tuple(c.targets)) for c in calls[-1]] == [
        ("shapes-vgg16-at", ("none",)), ("shapes-vgg16-at", ("random",))]  # fmt: skip
    assert main(["run", "--attacks", "fgsm", "pgd", "lrpc", "lrpf"]) == 0
    assert [(c.model, tuple(c.targets), len(c.plans())) for c in calls[-1]] == [
        ("shapes-vgg16", ("none",), 20), ("shapes-vgg16-at", ("none",), 20)]  # fmt: skip


def test_targeted_rows_print_apart_and_are_selected_by_their_target(tmp_path, capsys):
    rows = ("--attacks", "pgd", "--stages", "coarse", "--protocol", "minimal", "--no-figures")
    board = _run(tmp_path, *rows, "--target", "none", "random")
    assert board["success_rule"].tolist() == ["stage_changed", "target_reached"]
    out = capsys.readouterr().out
    assert "6 images, protocol minimal (success: coarse: stage_changed):" in out
    assert "6 images, protocol minimal, random targets (success: coarse: target_reached):" in out
    # a selector without a target names the untargeted row; ":random" the targeted one
    specs = ["pgd:none", "shapes-vgg16/pgd:none:coarse:minimal:random"]
    stored = read_leaderboard(tmp_path / "leaderboard.csv")
    assert [select_one(stored, s, "board")["row_id"] for s in specs] == board["row_id"].tolist()
    assert main(["compare", str(tmp_path), *specs, "--format", "csv"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path), "pgd:none:coarse:minimal:nearest", "pgd:none"]) == 2
    line = _error_line(capsys)
    assert "matches no row" in line and "shapes-vgg16/pgd:none:coarse:minimal:random (" in line


@pytest.mark.parametrize("second, message", [("missing.pt", "missing.pt"),
                                             ("foreign.pt", "animal")])  # fmt: skip
def test_a_bad_second_model_fails_before_the_first_attack(
    tmp_path, monkeypatch, capsys, tiny_hierarchy, second, message
):
    # a finite checkpoint of another hierarchy than the shapes data's
    save_checkpoint(tiny_vgg(tiny_hierarchy), tmp_path / "foreign.pt")

    def attack_all(*args, **kwargs):
        raise AssertionError("an attack started before every model was checked")

    monkeypatch.setattr("c2f_attacks.runner.execute._attack_all", attack_all)
    out = tmp_path / "out"
    args = ["--model", "shapes-vgg16", str(tmp_path / second), "--out", str(out)]
    assert main(["run", *ONE_ROW, *args]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench run: error: ") and message in line
    assert not (out / "leaderboard.csv").exists() and not (out / "records").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attacks", "cw"], "unknown attack 'cw'"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--model", "missing.pt"], "missing.pt"),
        (["--stages", "fine", "--attacks", "lrpc"], "LRPC attacks the coarse stage only"),
        (["--out", ""], "out must name a folder"),
        (["--out", str(COMMITTED_RESULTS[0])], "committed results folder"),
        (["-n", str(10**9)], "beyond the limit"),
    ],
)
def test_run_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--quiet", *args]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench run: error: ") and message in line
    assert not (out / "leaderboard.csv").exists()


def test_usage_errors_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "-n", "0"])
    assert stop.value.code == 2
    assert "argument -n/--num-images: expected a positive integer, got 0" in _error_line(capsys)
    with pytest.raises(SystemExit):
        main(["train"])
    assert "the following arguments are required: --out" in _error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    assert main(["run", "--device", "cuda", "--out", str(tmp_path), "--quiet"]) == 2
    assert "no CUDA GPU" in _error_line(capsys)


@pytest.mark.parametrize(
    "raised, code, text",
    [(KeyboardInterrupt(), 130, "interrupted (Ctrl-C)"),
     (Interrupted(signal.SIGTERM), 143, "interrupted by SIGTERM")],
)  # fmt: skip
def test_interrupts_exit_with_one_line_and_the_signal_status(monkeypatch, capsys, raised, code,
                                                             text):  # fmt: skip
    def interrupted(configs):
        raise raised

    monkeypatch.setattr("c2f_attacks.runner.run_all", interrupted)
    assert main(["run", "--quiet"]) == code
    line = _error_line(capsys)
    assert line.startswith("c2f-bench run: interrupted") and text in line


def test_module_and_console_script_entry_points(tmp_path):
    """`python -m c2f_attacks.cli` and `c2f-bench` (when installed) run and fail alike."""
    commands = [[sys.executable, "-m", "c2f_attacks.cli"]]
    script = shutil.which("c2f-bench", path=os.path.dirname(sys.executable))
    if script:
        commands.append([script])
    # started together: each is a cold interpreter that spends its time importing torch
    procs = [subprocess.Popen([*command, "leaderboard", str(tmp_path / "none.csv")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for command in commands]  # fmt: skip
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 2, err
            assert err.strip() == (
                f"c2f-bench leaderboard: error: no leaderboard rows in {tmp_path / 'none.csv'}"
            )
    finally:
        for proc in procs:  # none left behind by a failure
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_rank_torchrun_equals_one_process(tmp_path):
    """Each image is attacked in the same batch whatever the number of ranks, so the numbers
    equal a single process's on the same CPU with the same threads (one per rank; the thread
    count may change a float32 reduction's order, and a sign step makes that a full step)."""
    args = ("--attacks", "fgsm,lrpc", "--masks", "random", "--no-figures")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _run(tmp_path / "one", *args)
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `python -m torch.distributed.run` is torchrun; `-m c2f_attacks.cli` is c2f-bench.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "-m", "c2f_attacks.cli", "run", *SMALL_RUN, *args,
           "--out", str(tmp_path / "two")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = pd.read_csv(tmp_path / "two" / "leaderboard.csv")
    pd.testing.assert_frame_equal(single.drop(columns=VOLATILE), sharded.drop(columns=VOLATILE))


def test_accuracy_restores_every_submodule_mode():
    model = load_model("shapes-vgg16").train()
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][:2]
    for m in frozen:
        m.eval()
    before = {name: m.training for name, m in model.named_modules()}
    x = torch.rand(3, 3, 32, 32)
    accuracy(model, x, torch.zeros(3, dtype=torch.long))
    assert {name: m.training for name, m in model.named_modules()} == before


def test_accuracy_explain_and_leaderboard_commands(tmp_path, capsys):
    assert main(["accuracy", "-n", "40", "--batch-size", "16"]) == 0
    line = capsys.readouterr().out
    coarse = float(line.split("coarse accuracy ")[1].split(",")[0])
    fine = float(line.split("fine accuracy ")[1])
    assert coarse >= 0.95 and fine >= 0.95
    png = tmp_path / "explain.png"
    assert main(["explain", "-n", "2", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    assert main(["explain", "--out", str(COMMITTED_RESULTS[0] / "x.png")]) == 2
    assert "committed results folder" in _error_line(capsys)


def test_plotting_modules_leave_the_matplotlib_backend_alone():
    """Importing the modules that draw (figures, viz, the photo demo, the CLI) in a fresh
    interpreter keeps the backend the user chose: one cold process for all of them."""
    code = ("import matplotlib; import c2f_attacks.figures, c2f_attacks.viz, c2f_attacks.demo, "
            "c2f_attacks.cli; print(matplotlib.get_backend())")  # fmt: skip
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "svg"


def test_own_model_hierarchy_and_image_folder_pass_through(tmp_path, monkeypatch, capsys):
    """--model module:factory with --hierarchy, on --dataset imagefolder:PATH."""
    from PIL import Image

    hierarchy = {"round": ["disk", "ring"], "angular": ["square", "star"]}
    (tmp_path / "h.json").write_text(json.dumps(hierarchy))
    gen = torch.Generator().manual_seed(0)
    for fine in ("disk", "ring", "square", "star"):
        (tmp_path / "images" / fine).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(40, 40, 3, generator=gen) * 255).byte().numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / fine / f"{i}.png")
    (tmp_path / "tiny_factory.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),\n"
        "        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 4))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    board = _run(tmp_path / "out", "--model", "tiny_factory:make", "--hierarchy",
                 str(tmp_path / "h.json"), "--dataset", f"imagefolder:{tmp_path / 'images'}",
                 "--attacks", "fgsm", "--protocol", "fixed", "-n", "4", "--no-figures")  # fmt: skip
    assert board["model"].tolist() == ["tiny_factory:make"] * 2
    assert set(board["n"]) == {4} and board["model_hash"].nunique() == 1


def test_a_failed_final_write_names_the_rejected_rows_file(tmp_path, monkeypatch, capsys):
    from c2f_attacks.leaderboard import LeaderboardWriteError

    side = tmp_path / "leaderboard.rejected-20250101T000000.csv"

    def fail(path, rows, timeout=60.0):
        raise LeaderboardWriteError(f"{path}: disk full (rows saved to {side})", side)

    monkeypatch.setattr("c2f_attacks.runner.execute.upsert_rows", fail)
    assert main(["run", *SMALL_RUN, "--attacks", "fgsm", "--stages", "coarse", "--protocol",
                 "fixed", "--no-figures", "--out", str(tmp_path)]) == 2  # fmt: skip
    line = _error_line(capsys)
    assert line.startswith("c2f-bench run: error: ") and str(side) in line
