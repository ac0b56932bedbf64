"""The main job end to end: ``c2f-bench run`` on the shipped model.

Under ``--benchmark`` it runs the default configuration (what ``c2f-bench run`` does without
arguments) into results/ (the committed leaderboard, records and figures: this is the
documented regeneration) and records its wall time; at smoke size it attacks 6 images with few
steps into a temporary folder.
"""

from __future__ import annotations

from bench.conftest import RESULTS
from c2f_attacks.leaderboard import read_leaderboard
from c2f_attacks.runner import RunConfig, run

SMOKE = dict(n=6, batch_size=4, pgd_steps=2, steps=3, refresh=2, search_steps=2)


def test_end_to_end_run(benchmark, full_size, tmp_path, record_ratio):
    if full_size:
        cfg = RunConfig(out=str(RESULTS), allow_results_dir=True, progress=False)
    else:
        cfg = RunConfig(out=str(tmp_path), progress=False, figures=False, **SMOKE)
    rows = benchmark.pedantic(run, args=(cfg,), rounds=1, iterations=1)
    board = read_leaderboard(RESULTS / "leaderboard.csv" if full_size else tmp_path /
                             "leaderboard.csv")  # fmt: skip
    assert len(rows) == len(cfg.plans()) and set(rows["row_id"]) <= set(board["row_id"])
    assert set(rows["attack"]) == {"fgsm", "pgd", "lrpc", "lrpf"}
    assert set(rows["mask"]) == {"none", "lrp", "gradient", "random"}
    fixed = rows[rows["mode"] == "fixed"]
    assert (fixed["linf_median"].fillna(0) <= fixed["eps"] + 1e-6).all()
    record_ratio(
        "end_to_end_run_seconds", benchmark.stats.stats.mean if benchmark.stats else float("nan"),
        goal="<= 90 s on 2 CPU cores (goal 60 s)", n=cfg.n,
    )  # fmt: skip
