"""The main job end to end: ``c2f-bench run`` on the shipped model.

Under ``--benchmark`` it runs the default configuration (256 shapes test images, every attack)
and writes results/leaderboard.csv and results/figures/, the committed results; at smoke size it
attacks 8 images into a temporary folder.
"""

from __future__ import annotations

import pandas as pd

from bench.conftest import RESULTS
from c2f_attacks.runner import RunConfig, run


def test_end_to_end_run(benchmark, full_size, tmp_path, record_ratio):
    out = RESULTS if full_size else tmp_path
    cfg = RunConfig(n=256 if full_size else 8, batch_size=128 if full_size else 4, out=out,
                    progress=False, figures=full_size)  # fmt: skip
    rows = benchmark.pedantic(run, args=(cfg,), rounds=1, iterations=1)
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(rows) == 10 and set(rows.attack) == {"fgsm", "pgd", "lrpc", "lrpf"}
    assert (board.backend_agreement.dropna() >= 0.998).all()
    fixed = rows[rows["mode"] == "fixed"]
    assert (fixed.linf_mean.fillna(0) <= fixed.eps + 1e-6).all()
    record_ratio(
        "end_to_end_run_seconds", benchmark.stats.stats.mean if benchmark.stats else float("nan"),
        goal="<= 120 s on 2 CPU cores (goal 60 s)", n=cfg.n,
    )  # fmt: skip
