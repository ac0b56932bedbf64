"""c2f-bench report: findings, headlines, the README block, --check, bad input, determinism."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from c2f_attacks.cli import main
from c2f_attacks.leaderboard import COLUMNS as BOARD_COLUMNS
from c2f_attacks.report import SECTIONS, Results, fmt, render, render_file
from c2f_attacks.report.findings import Context, _meets, findings_markdown, section
from c2f_attacks.report.headlines import headline_markdown
from c2f_attacks.report.readme import BEGIN, END
from c2f_attacks.runner.preflight import COMMITTED_RESULTS
from tests.report_helpers import N, add_row, add_transfer, key, toy_run

ROOT = Path(__file__).resolve().parent.parent


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A results folder: a run of two models with a transfer table, and a larger run below it
    (written once per module; each test gets a copy)."""
    folder = toy_run(tmp_path_factory.mktemp("template") / "results")
    toy_run(folder, model="toy-defended", lrp=0.2, random=0.5)
    add_transfer(folder, "toy-defended", 0.25)
    toy_run(folder / "big", n=16)
    return folder


@pytest.fixture
def results(template, tmp_path, monkeypatch) -> Path:
    """A copy of the template as ``results/`` in the working folder (the report names files as
    the folder was named on the command line)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(template, tmp_path / "results")
    return Path("results")


# ----------------------------------------------------------------------------- numbers as text
@pytest.mark.parametrize(("value", "text"), [
    (0.12345, "0.123"), (float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), ""),
    (None, ""), (-0.0001, "0.000"), (-0.01, "-0.010"), (1, "1.000"),
])  # fmt: skip
def test_numbers_are_written_the_same_everywhere(value, text):
    assert fmt.num(value) == text


@pytest.mark.parametrize(("value", "goal", "met"), [
    (1.42, "<= 1.5", "yes"), (1.544, "<= 1.5", "no"), (2.1, ">= 2", "yes"), (1.9, ">= 2", "no"),
    (47.1, "<= 90 s on 2 CPU cores (goal 60 s)", "yes"), (0.3, "none: measured", ""),
    (None, "<= 1.5", ""),
])  # fmt: skip
def test_a_speed_ratio_says_whether_it_meets_its_goal(value, goal, met):
    assert _meets(value, goal) == met


def test_budgets_read_as_255ths_up_to_float32_rounding():
    assert fmt.budget(8 / 255) == "8/255"
    assert fmt.budget(0.03137257695198059) == "8/255"  # a float32 l-inf of 8/255
    assert fmt.budget(0.0241) == "0.0241"
    assert fmt.interval(0.5, 0.25, float("inf")) == "0.500 [0.250, inf]"
    assert fmt.interval(0.5, None, 0.7) == "0.500"


def test_markdown_tables_escape_pipes_and_align_numbers():
    table = fmt.md_table(["a", "b"], [["x|y", "1.0"]], [False, True])
    assert table.splitlines() == ["| a | b |", "| --- | ---: |", "| x\\|y | 1.0 |"]


# ----------------------------------------------------------------------------- findings
def test_findings_name_every_table_source_and_keep_runs_apart(results, tmp_path):
    text = findings_markdown(Context(Results.open(results), tmp_path / "docs"))
    assert "Source: [results/leaderboard.csv](../results/leaderboard.csv)." in text
    assert "Source: [results/big/leaderboard.csv](../results/big/leaderboard.csv)." in text
    assert text.index("### results/:") < text.index("### results/big/:")  # the folder's own first
    assert "#### toy-defended, coarse stage" in text
    # a row as the table writes it: value with interval, "up to" for a minimal row's search bound
    lrpc = "| lrpc | lrp | first_success | stage_changed |  | 1.000 [0.900, 1.000] | 0.100 [0.090"
    assert lrpc in text
    assert "| pgd | none | minimal | stage_changed | up to 64/255 |" in text
    assert "#### toy-model, coarse stage: transfer fooling ratio" in text


def test_a_section_whose_file_is_absent_is_one_line(results, tmp_path):
    text = findings_markdown(Context(Results.open(results), tmp_path))
    missing = text[text.index("## Not in these results") :]
    assert "- Budget curves: no `**/budget_curves.csv` in results/ (written by `c2f-bench run" in (
        missing
    )
    assert "## Budget curves" not in text
    assert all(f"- {s.title}:" in missing or f"## {s.title}" in text for s in SECTIONS)


def test_unknown_columns_are_ignored_and_the_protocol_and_rule_are_shown(tmp_path):
    folder = tmp_path / "r"
    add_row(folder, key("m", "pgd", "coarse", "minimal", "none", 64 / 255), [True] * 4,
            [0.03] * 4, future_metric=1.5, linf_median_hi=float("inf"))  # fmt: skip
    text = findings_markdown(Context(Results.open(folder), tmp_path))
    header = next(line for line in text.splitlines() if line.startswith("| attack |"))
    assert "| protocol |" in header and "success rule" in header
    assert "future_metric" not in text and "severity" not in text
    assert "0.030 [" not in text and "| 0.030 |" in text  # no interval without its lower end
    assert "| 0.030 | inf" not in text


def test_a_censored_infinite_median_reads_back_and_shows_as_inf(tmp_path):
    folder = tmp_path / "r"
    add_row(folder, key("m", "lrpc", "coarse", "minimal", "lrp", 16 / 255), [True, False, False],
            [0.1, 0.0, 0.0], linf_median=float("inf"), linf_median_lo=0.1,
            linf_median_hi=float("inf"))  # fmt: skip
    text = findings_markdown(Context(Results.open(folder), tmp_path))
    assert "| inf [0.100, inf] |" in text
    site = render_file(Results.open(folder), tmp_path / "index.html", "site")  # JSON has no inf
    assert "inf [0.100, inf]" in site


def test_a_new_section_is_one_registered_function(results, tmp_path):
    (results / "ablation.json").write_text(json.dumps({"rows": [{"k": 0.1}, {"k": 0.2}]}))

    @section("Ablation", "ablation.json", "python scripts/ablation.py")
    def _ablation(ctx, files):
        rows = [[fmt.num(r["k"], 1)] for r in ctx.results.json(files[0])["rows"]]
        return f"{ctx.source(files[0])}\n\n{fmt.md_table(['k'], rows)}"

    try:
        text = findings_markdown(Context(Results.open(results), tmp_path))
    finally:
        SECTIONS.pop()
    assert "## Ablation\n\nSource: [results/ablation.json]" in text and "| 0.2 |" in text


def test_budget_curves_file_gives_a_table_with_intervals(results, tmp_path):
    board = Results.open(results).runs[0].leaderboard
    rid = board[(board["mask"] == "lrp") & (board["model"] == "toy-model")]["row_id"].iloc[0]
    (results / "budget_curves.csv").write_text(
        "row_id,norm,budget,fooling_ratio,fooling_ratio_lo,fooling_ratio_hi\n"
        f"{rid},linf,0.03137254901960784,0.25,0.1,0.4\n{rid},linf,0.0241,0.125,0.0,0.3\n"
    )
    text = findings_markdown(Context(Results.open(results), tmp_path))
    assert "| model | stage | row | 0.0241 | 8/255 |" in text
    row = "| toy-model | coarse | lrpc lrp first_success | 0.12 [0.00, 0.30] | 0.25 [0.10, 0.40] |"
    assert row in text


# ----------------------------------------------------------------------------- headlines
def test_headline_verdicts_follow_the_numbers(tmp_path, monkeypatch):
    """The lead names the comparison; which side is lower is computed, never written in."""
    monkeypatch.chdir(tmp_path)
    lower = headline_markdown(Context(Results.open(toy_run(Path("a"))), tmp_path))
    assert "LRPC on toy-model 0.100 [0.090, 0.110] vs 0.300 [0.290, 0.310]" in lower
    # 8 images, every one lower: the sign test's p is 2 / 2**8
    test = "(Holm over the 1, p < 0.05) finds it lower in 1 and higher in 0 (smallest adjusted p"
    assert (
        f"The LRP mask is lower in 1 of 1; the paired per-image sign test {test} 0.0078)" in lower
    )
    assert f"The gradient mask is lower in 1 of 1; the paired per-image sign test {test}" in lower
    higher = headline_markdown(
        Context(Results.open(toy_run(Path("b"), lrp=0.5, random=0.3)), tmp_path)
    )
    assert (
        "The LRP mask is lower in 0 of 1; the paired per-image sign test (Holm over the 1, "
        "p < 0.05) finds it lower in 0 and higher in 1" in higher
    )


def test_headlines_use_the_run_with_most_images_and_name_it(results, tmp_path):
    text = headline_markdown(Context(Results.open(results), Path("docs")))
    assert "([results/big/leaderboard.csv](../results/big/leaderboard.csv), 16 images" in text
    assert "from toy-model onto toy-defended at most 0.25 [0.12, 0.50]" in text


def test_headlines_without_their_rows_are_left_out(tmp_path):
    folder = tmp_path / "r"
    add_row(folder, key("m", "fgsm", "coarse", "fixed", "none", 8 / 255), [True] * 4, [0.03] * 4)
    assert headline_markdown(Context(Results.open(folder), tmp_path)) == ""


# ----------------------------------------------------------------------------- determinism
def test_output_is_byte_identical_across_runs_and_folders(results, tmp_path, monkeypatch):
    first = render(results, out=tmp_path / "site")
    again = render(results, out=tmp_path / "site")
    assert first == again
    # the same files elsewhere, named the same way relative to the working folder
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(results, elsewhere / "results")
    monkeypatch.chdir(elsewhere)
    moved = render("results", out="site")
    monkeypatch.chdir(tmp_path)
    here = render("results", out="site")
    assert list(moved.values()) == list(here.values())


# ----------------------------------------------------------------------------- the command
def test_report_writes_and_check_names_the_first_differing_line(results, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["report", str(results), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["findings.md", "index.html"]
    files = [str(out / "findings.md"), str(out / "index.html")]
    capsys.readouterr()
    assert main(["report", str(results), "--check", *files]) == 0
    lines = (out / "findings.md").read_text().splitlines()
    lines[6] = lines[6] + " edited"
    (out / "findings.md").write_text("\n".join(lines) + "\n")
    assert main(["report", str(results), "--check", *files]) == 1
    line = _error_line(capsys)
    assert f"{out / 'findings.md'}, line 7: expected " in line and "regenerate" in line


def test_check_of_a_missing_file_fails(results, tmp_path, capsys):
    assert main(["report", str(results), "--check", str(tmp_path / "none.md")]) == 1
    assert "none.md does not exist" in _error_line(capsys)


def test_readme_block_is_the_only_part_rewritten(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nIntro.\n\n{BEGIN}\nold\n{END}\n\nRest | kept.\n")
    assert main(["report", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# Title\n\nIntro.\n\n{BEGIN}\n- **The LRP mask against")
    assert text.endswith(f"{END}\n\nRest | kept.\n") and "old" not in text
    capsys.readouterr()
    assert main(["report", str(results), "--check", str(readme)]) == 0
    readme.write_text(text.replace("Intro.", "Intro changed."))  # outside the block: still current
    assert main(["report", str(results), "--check", str(readme)]) == 0


def test_readme_without_markers_is_refused_before_writing(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    out = tmp_path / "site"
    assert main(["report", str(results), "--out", str(out), "--readme", str(readme)]) == 2
    assert "needs the marker lines" in _error_line(capsys)
    assert not out.exists() or not any(out.iterdir())
    assert readme.read_text() == "# Title\n"


def _damage_csv(folder: Path) -> None:
    path = folder / "leaderboard.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], lines[2] + ",extra"]) + "\n")


def _damage_records(folder: Path) -> None:
    path = sorted((folder / "records").glob("*.csv.gz"))[0]
    path.write_bytes(gzip.compress(b"not,the,header\n1,2,3\n", mtime=0))


def _drop_records(folder: Path) -> None:
    sorted((folder / "records").glob("*.csv.gz"))[0].unlink()


def _bad_curves(folder: Path) -> None:
    (folder / "budget_curves.csv").write_text(
        "row_id,norm,budget,fooling_ratio,fooling_ratio_lo,fooling_ratio_hi\n"
        "notarow,linf,0.1,0.5,0.4,0.6\n"
    )


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: shutil.rmtree(f), "results folder"),
    (lambda f: (f / "leaderboard.csv").unlink() or shutil.rmtree(f / "big"),
     "results/leaderboard.csv does not exist (nor a leaderboard.csv in a subfolder)"),
    (_damage_csv, f"leaderboard.csv, line 3: {len(BOARD_COLUMNS) + 1} fields, the header has "
                  f"{len(BOARD_COLUMNS)}"),
    (_damage_records, "the header is not the records header"),
    (_drop_records, "has no records file"),
    (_bad_curves, "budget_curves.csv, line 2: row_id 'notarow' is not a row of the leaderboard"),
    (lambda f: (f / "bench_ratios.json").write_text("{"),
     "bench_ratios.json, line 1: not valid JSON"),
    (lambda f: (f / "bench_ratios.json").write_text('{"lrp": {"value": 1.4, "goal": "<= 1.5"}}'),
     "bench_ratios.json: 'lrp' is not one record per CPU model"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_nothing_written(results, tmp_path, capsys, damage,
                                                          message):  # fmt: skip
    damage(results)
    out = tmp_path / "site"
    assert main(["report", str(results), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench report: error: ") and message in line, line
    assert not out.exists() or not any(out.iterdir())


def test_report_needs_something_to_do_and_guards_the_committed_results(results, capsys):
    assert main(["report", str(results)]) == 2
    assert "nothing to do" in _error_line(capsys)
    committed = COMMITTED_RESULTS[0] / "site-test-never-written"
    assert main(["report", str(results), "--out", str(committed)]) == 2
    assert "--allow-results-dir" in _error_line(capsys)
    assert not committed.exists()


# ----------------------------------------------------------------------------- committed files
@pytest.mark.slow
def test_committed_findings_site_and_readme_are_current(monkeypatch, capsys):
    """docs/findings.md, results/site/index.html and the README's headline block are exactly
    what `c2f-bench report results` writes now: no number can drift from its file."""
    monkeypatch.chdir(ROOT)
    files = ["docs/findings.md", "results/site/index.html", "README.md"]
    code = main(["report", "results", "--check", *files])
    assert code == 0, capsys.readouterr().err
    assert render_file(Results.open("results"), "docs/findings.md").count("Source: [results/") > 10


def _sweep_file(folder: Path, chosen: float) -> None:
    def row(lam: float, median: float) -> dict:
        return {"model": "m", "attack": "LRPC", "knob": "reference" if lam == 0 else "lam",
                "value": "" if lam == 0 else f"{lam:g}", "lam": lam, "linf_median": median,
                "linf_median_lo": median - 0.01, "linf_median_hi": median + 0.01}  # fmt: skip

    data = {"meta": {"n": 8}, "rows": [row(0.0, 0.1), row(1.0, 0.2)],
            "choice": {"lam": chosen, "lam_below_zero_interval": {"1": []},
                       "lam_above_zero_interval": {"1": ["m/LRPC"]}}}  # fmt: skip
    (folder / "sweep").mkdir()
    (folder / "sweep" / "sweep_defaults.json").write_text(json.dumps(data))


@pytest.mark.parametrize("chosen", [0.0, 1.0])
def test_the_relevance_headline_reads_the_sweep(tmp_path, chosen):
    folder = toy_run(tmp_path / "r")
    _sweep_file(folder, chosen)
    text = headline_markdown(Context(Results.open(folder), tmp_path))
    assert "at lambda 0 / 1: LRPC on m 0.100 [0.090, 0.110] / 0.200 [0.190, 0.210]" in text
    assert "of 1 cells: lambda 1: lower in 0, higher in 1" in text
    assert ("LRP-masked signed gradient steps" in text) == (chosen == 0)


def test_rows_alike_but_for_a_setting_are_labelled_by_it():
    from c2f_attacks.report.tables import row_label, with_labels

    base = {"model": "m", "stage": "coarse", "attack": "lrpc", "mask": "lrp", "protocol": "minimal"}
    frame = pd.DataFrame([{**base, "config": "lam=0.0;top_k=0.1"},
                          {**base, "config": "lam=1.0;top_k=0.1"},
                          {**base, "mask": "random", "config": "lam=0.0;top_k=0.1"}])  # fmt: skip
    labelled = with_labels(frame)
    labels = [row_label(r) for r in labelled.to_dict("records")]
    assert labels == ["lrpc lrp minimal lam=0.0", "lrpc lrp minimal lam=1.0", "lrpc random minimal"]
    # the tables show the differing settings in a column of their own
    assert labelled["differing_settings"].fillna("").tolist() == ["lam=0.0", "lam=1.0", ""]


def test_minimal_rows_of_two_search_bounds_are_labelled_by_it():
    """Two l-inf policies in one run (a minimal search capped at 16/255 and one unbounded) read
    apart; a fixed row's words already name its budget."""
    from c2f_attacks.report.tables import row_label, with_labels

    base = {"model": "m", "stage": "coarse", "attack": "lrpc", "mask": "lrp", "config": "lam=0.0"}
    frame = pd.DataFrame([{**base, "protocol": "minimal", "eps": 16 / 255},
                          {**base, "protocol": "minimal", "eps": 1.0},
                          {**base, "protocol": "fixed", "eps": 8 / 255}])  # fmt: skip
    labels = [row_label(r) for r in with_labels(frame).to_dict("records")]
    assert labels == [
        "lrpc lrp minimal eps=16/255",
        "lrpc lrp minimal eps=255/255",
        "lrpc lrp fixed 8/255",
    ]


# ----------------------------------------------------------------------------- targeted rows
def _section(text: str, title: str) -> str:
    """A findings section's text, up to the next section."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _tables(text: str) -> list[list[str]]:
    """The Markdown tables of ``text``, each as its lines."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.fixture(scope="module")
def targeted_run(tmp_path_factory) -> Path:
    """A real run with untargeted and random-target rows: PGD on both stages and LRPC with the
    lrp mask under the minimal protocol, 2 images, few steps."""
    out = tmp_path_factory.mktemp("targeted") / "results"
    args = ["run", "--model", "shapes-vgg16", "-n", "2", "--attacks", "pgd", "lrpc", "--masks",
            "lrp", "--protocol", "minimal", "--target", "none", "random", "--set", "steps=3",
            "refresh=2", "pgd.steps=2", "--search-steps", "2", "--no-figures", "--quiet",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return out


def test_targeted_rows_are_a_table_of_their_own_in_the_findings_and_the_site(targeted_run,
                                                                             tmp_path):  # fmt: skip
    results = Results.open(targeted_run)
    board = results.runs[0].leaderboard
    assert (board["success_rule"] == "target_reached").sum() == 3 and len(board) == 6
    text = findings_markdown(Context(results, tmp_path))
    section_text = _section(text, "Targeted attacks")
    assert "#### Targeted attacks (random targets)" in section_text
    [table] = _tables(section_text)
    assert table[0] == ("| attack | mask | stage | model | protocol | FR [95% CI] | "
                        "median l-inf [95% CI] | mean queries | mistake severity [95% CI] | "
                        "severity counts |")  # fmt: skip
    assert [line.split(" | ")[:3] for line in table[2:]] == [
        ["| lrpc", "lrp", "coarse"], ["| pgd", "none", "coarse"], ["| pgd", "none", "fine"]
    ]  # fmt: skip
    targeted_rows = board[board["success_rule"] == "target_reached"].set_index("attack")
    pgd = targeted_rows[targeted_rows["stage"] == "fine"].loc["pgd"]
    assert fmt.column_interval(pgd, "fooling_ratio") in table[4]
    # the untargeted tables hold the untargeted rows only
    untargeted = _section(text, "Leaderboards")
    assert "target_reached" not in untargeted and "target=" not in untargeted
    assert sum(len(t) - 2 for t in _tables(untargeted)) == 3
    assert "target_reached" not in headline_markdown(Context(results, tmp_path))
    # the site: the same table, its own section and chart titles
    site = render_file(results, tmp_path / "index.html", "site")
    part = site[site.index('<section id="targeted">') :]
    part = part[: part.index("</section>")]
    assert "<h3>Targeted attacks (random targets)</h3>" in part and part.count("<tr>") == 4
    assert '<a href="#targeted">Targeted</a>' in site
    assert "shapes-vgg16, fine stage, random targets" in site


def test_severity_columns_show_in_both_kinds_of_table_when_the_leaderboard_has_them(tmp_path):
    folder = tmp_path / "r"
    severity = dict(mistake_severity=1.5, mistake_severity_lo=1.0, mistake_severity_hi=2.0,
                    severity_counts="1:2 2:2")  # fmt: skip
    add_row(folder, key("m", "pgd", "fine", "minimal", "none", 64 / 255), [True] * 4, [0.03] * 4,
            **severity)  # fmt: skip
    aimed = {**key("m", "pgd", "fine", "minimal", "none", 64 / 255),
             "success_rule": "target_reached", "config": "target=random"}  # fmt: skip
    add_row(folder, aimed, [True] * 4, [0.05] * 4, **severity)
    text = findings_markdown(Context(Results.open(folder), tmp_path))
    [plain] = _tables(_section(text, "Leaderboards"))
    [targeted] = _tables(_section(text, "Targeted attacks"))
    for table in (plain, targeted):
        assert table[0].endswith("| mistake severity [95% CI] | severity counts |")
        assert table[2].endswith("| 1.50 [1.00, 2.00] | 1:2 2:2 |")
    assert "target_reached" not in "\n".join(plain) and len(plain) == len(targeted) == 3


def test_a_targeted_row_is_labelled_by_its_target_and_finds_its_own_figure(tmp_path):
    from c2f_attacks.report.tables import row_label

    folder = tmp_path / "r"
    add_row(folder, key("m", "pgd", "coarse", "fixed", "none", 8 / 255), [True] * 2, [0.03] * 2)
    aimed = {**key("m", "pgd", "coarse", "fixed", "none", 8 / 255),
             "success_rule": "target_reached", "config": "target=random"}  # fmt: skip
    add_row(folder, aimed, [True] * 2, [0.03] * 2)
    figures = folder / "figures" / "m"
    figures.mkdir(parents=True)
    for name in ("pgd_coarse_fixed.png", "pgd_coarse_fixed_target_random.png"):
        (figures / name).write_bytes(b"png")
    run = Results.open(folder).runs[0]
    assert [row_label(r) for r in run.rows] == ["pgd fixed 8/255", "pgd fixed 8/255 target=random"]
    assert [run.figure(r).name for r in run.rows] == [
        "pgd_coarse_fixed.png", "pgd_coarse_fixed_target_random.png"
    ]  # fmt: skip


# ----------------------------------------------------------------------------- ablations
def _lrp_row(folder: Path, linf: list[float], **settings: Any) -> None:
    row_key = key("m", "lrpc", "coarse", "minimal", "lrp", 64 / 255)
    row_key["config"] = ";".join(f"{k}={v}" for k, v in sorted(settings.items()))
    median = float(np.median(linf))
    add_row(folder, row_key, [True] * len(linf), linf, linf_median_lo=median,
            linf_median_hi=median)  # fmt: skip


@pytest.mark.parametrize("exact_budget", [0.1, 0.2])
def test_the_relevance_ablation_counts_unchanged_rows_and_says_when_the_term_is_inert(
    tmp_path, exact_budget
):
    folder = tmp_path / "relevance"
    default = {"composite": "epsilon_plus_flat"}
    _lrp_row(folder, [0.1] * N, lam=0.0, relevance_grad="refresh", **default)
    _lrp_row(folder, [0.1] * N, lam=1.0, relevance_grad="refresh", **default)
    _lrp_row(folder, [exact_budget] * N, lam=1.0, relevance_grad="exact", **default)
    text = headline_markdown(Context(Results.open(folder), tmp_path))
    assert "LRPC on m, lambda 1.0 exact " in text and "LRPC on m, lambda 1.0 refresh " in text
    if exact_budget == 0.1:
        assert "every image's budget is unchanged in 2 of 2 rows" in text
        assert "finds it lower in 0 and higher in 0" in text
        assert "LRPC/LRPF remain LRP-masked signed gradient steps" in text
    else:  # 8 of 8 images higher: sign test p = 2 / 2**8, Holm over 2 -> 0.016
        assert "every image's budget is unchanged in 1 of 2 rows" in text
        assert "finds it lower in 0 and higher in 1 (smallest adjusted p 0.016)" in text
        assert "signed gradient steps" not in text


def test_the_composite_headline_compares_with_the_default_composite(tmp_path):
    folder = tmp_path / "relevance"
    _lrp_row(folder, [0.1] * N, lam=0.0, relevance_grad="refresh", composite="epsilon_plus_flat")
    _lrp_row(folder, [0.05] * N, lam=0.0, relevance_grad="refresh", composite="epsilon_gamma_box")
    text = headline_markdown(Context(Results.open(folder), tmp_path))
    assert (
        "another composite vs the default epsilon_plus_flat: LRPC on m, epsilon_gamma_box " in text
    )
    assert "The other composite is lower in 1 of 1" in text and "finds it lower in 1 and" in text


def test_the_sparse_headline_keeps_l_inf_policies_apart(tmp_path):
    folder = tmp_path / "sparse"
    for bound, cap, sparse_l0 in (
        (16 / 255, f"linf_cap={16 / 255}", 0.3),
        (1.0, "linf_cap=", 0.01),
    ):
        lrp = key("m", "lrpc", "coarse", "minimal", "lrp", bound)
        add_row(folder, lrp, [True] * N, [0.05] * N, l0=[0.1] * N, l0_at_fr50=0.1)
        sparse = {**key("m", "adv_lib:sigma_zero", "coarse", "minimal", "none", None),
                  "norm": "l0", "config": cap}  # fmt: skip
        add_row(folder, sparse, [True] * N, [0.5] * N, l0=[sparse_l0] * N, l0_at_fr50=sparse_l0)
    text = headline_markdown(Context(Results.open(folder), tmp_path))
    assert ("m coarse, l-inf 16/255: lrpc lrp 0.100 (20 queries), adv_lib:sigma_zero 0.300 "
            "(20 queries)") in text  # fmt: skip
    assert "m coarse, l-inf unbounded: lrpc lrp 0.100 (20 queries), adv_lib:sigma_zero" in text
    # capped, sigma-zero needs more pixels on every image; unbounded, fewer
    assert (
        "the l0 attack is lower in 1 of 2" in text and "finds it lower in 1 and higher in 1" in text
    )
