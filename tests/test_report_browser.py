"""The results site in a real browser: headless Chromium from the system packages runs the
page's script (``--dump-dom``), and the test reads the DOM it leaves. Filters, sort and open
rows are set through the URL fragment, the same path the page's controls take."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from c2f_attacks.report import render, write
from tests.report_helpers import BoardRows, add_transfer, chromium, dump_dom, toy_run

ROOT = Path(__file__).resolve().parent.parent

if chromium() is None:
    if os.environ.get("CI"):  # .ci/run installs it: a CI without it must fail, not skip
        raise RuntimeError("headless Chromium is not installed (apt-get install chromium)")
    pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)  # fmt: skip


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """The page of a two-model results folder with a transfer table and a figure."""
    folder = tmp_path_factory.mktemp("browser")
    results = toy_run(folder / "results")
    toy_run(results, model="toy-defended", lrp=0.2, random=0.5)
    add_transfer(results, "toy-defended", 0.25)
    figure = results / "figures" / "toy-model" / "lrpc_coarse_first_success_lrp.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        write(render("results", out="results/site"))
    finally:
        os.chdir(cwd)
    return results / "site" / "index.html"


def _rows(page: Path, fragment: str = "") -> BoardRows:
    board = BoardRows(dump_dom(page, fragment))
    assert board.root.get("data-ready") == "1", "the page's script did not finish"
    assert "data-js-errors" not in board.root, board.root.get("data-js-errors")
    return board


def _column(page_rows: BoardRows, header_index: int) -> list[str]:
    return [cells[header_index] for _, cells in page_rows.rows]


# columns of the table: run, model, stage, attack, mask, mode, eps, FR, ...
MODEL, ATTACK, MASK, FR = 1, 3, 4, 8


def test_every_leaderboard_row_is_shown_without_a_script_error(page):
    board = _rows(page)
    assert len(board.rows) == 10  # 5 rows per model
    assert {cells[MODEL] for _, cells in board.rows} == {"toy-model", "toy-defended"}


def test_filters_show_only_matching_rows(page):
    board = _rows(page, "model=toy-model&attack=lrpc")
    assert len(board.rows) == 3
    assert set(_column(board, MODEL)) == {"toy-model"} and set(_column(board, ATTACK)) == {"lrpc"}
    searched = _rows(page, "q=gradient")
    assert searched.rows and all(cells[MASK] == "gradient" for _, cells in searched.rows)


def test_sorting_orders_by_the_column_value(page):
    board = _rows(page, "attack=pgd&sort=fooling_ratio&dir=desc")
    ratios = [float(text.split()[0]) for text in _column(board, FR)]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > ratios[-1]


def test_an_open_row_shows_its_budget_curves_and_figure(page):
    board = _rows(page)
    ident = next(
        i for i, cells in board.rows if cells[MASK] == "lrp" and cells[MODEL] == "toy-model"
    )
    dom = dump_dom(page, f"open={ident}")
    assert BoardRows(dom).details == [ident]
    detail = dom[dom.index(f'data-detail="{ident}"') :]
    assert "<svg" in detail[:20000]
    assert 'src="../figures/toy-model/lrpc_coarse_first_success_lrp.png"' in detail[:40000]


def test_a_script_error_is_seen(page, tmp_path):
    """The check above can fail: a page whose script throws is caught."""
    broken = tmp_path / "index.html"
    broken.write_text(page.read_text().replace('"use strict";', '"use strict"; nosuch();', 1))
    board = BoardRows(dump_dom(broken))
    assert "nosuch" in (board.root.get("data-js-errors") or "")
    assert board.root.get("data-ready") != "1"


@pytest.mark.slow
def test_the_committed_site_shows_every_row_without_a_script_error():
    import pandas as pd

    expected = sum(len(pd.read_csv(p)) for p in (ROOT / "results").glob("**/leaderboard.csv"))
    board = _rows(ROOT / "results" / "site" / "index.html")
    assert len(board.rows) == expected
