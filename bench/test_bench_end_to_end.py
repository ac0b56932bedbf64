"""The main job end to end: ``c2f-bench run``.

Under ``--benchmark`` it runs the default configuration (what ``c2f-bench run`` does without
arguments: both shipped models, untargeted and random-target rows) into results/ (the committed
leaderboard, records, adversarial images and figures, as ``c2f-bench run --out results
--allow-results-dir`` writes them) and records its wall time; at smoke size it attacks 6 images
of the first shipped model with few steps into a temporary folder.
"""

from __future__ import annotations

from bench.conftest import RESULTS
from c2f_attacks.leaderboard import read_leaderboard
from c2f_attacks.runner import expand, run_all

SMOKE = dict(
    n=6, batch_size=4, search_steps=2, settings={"steps": 3, "refresh": 2, "pgd": {"steps": 2}}
)


def test_end_to_end_run(benchmark, full_size, tmp_path, record_ratio):
    if full_size:
        configs = expand(None, dict(out=str(RESULTS), allow_results_dir=True, progress=False))
    else:
        configs = expand(None, dict(model="shapes-vgg16", out=str(tmp_path), progress=False,
                                    figures=False, **SMOKE))  # fmt: skip
    rows = benchmark.pedantic(run_all, args=(configs,), rounds=1, iterations=1)
    board = read_leaderboard(RESULTS / "leaderboard.csv" if full_size else tmp_path /
                             "leaderboard.csv")  # fmt: skip
    assert len(rows) == sum(len(cfg.plans()) for cfg in configs)
    assert set(rows["row_id"]) <= set(board["row_id"])
    assert set(rows["model"]) == {cfg.model for cfg in configs}
    assert set(rows["attack"]) == {"fgsm", "pgd", "lrpc", "lrpf"}
    assert set(rows["mask"]) == {"none", "lrp", "gradient", "random"}
    # the targeted part: 4 rows per model
    assert (rows["success_rule"] == "target_reached").sum() == 4 * len({c.model for c in configs})
    fixed = rows[rows["protocol"] == "fixed"]
    # over the fooled images (the censored median is +inf where a fixed row fools under half)
    assert (fixed["linf_mean"].fillna(0) <= fixed["eps"] + 1e-6).all()
    models = len({cfg.model for cfg in configs})
    record_ratio(
        "end_to_end_run_seconds", benchmark.stats.stats.mean if benchmark.stats else float("nan"),
        goal="<= 90 s on 2 CPU cores (goal 60 s)", n=configs[0].n, models=models,
    )  # fmt: skip
