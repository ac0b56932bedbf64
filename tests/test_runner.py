"""The run itself: rows, records, leaderboard identity, bounded batches, figures, backends."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from c2f_attacks.attacks.masks import RandomMask
from c2f_attacks.evaluation import (
    AdversarialBatch,
    AdversarialRow,
    aggregate,
    load_records,
    per_image_records,
    save_adversarial,
)
from c2f_attacks.evaluation.adversarial import load_adversarial, read_back
from c2f_attacks.leaderboard import KEY, read_leaderboard
from c2f_attacks.models import load_model
from c2f_attacks.runner import (
    FigureWarning,
    RunConfig,
    execute,
    expand,
    figure_folder,
    memory,
    model_hash,
    run,
)

# Small and fast: 6 images in batches of 4 (the last batch is short), few steps.
SMALL = dict(
    n=6,
    batch_size=4,
    progress=False,
    figures=False,
    search_steps=2,
    settings={"steps": 3, "refresh": 2, "pgd": {"steps": 2}},
)
MIXED = dict(
    attacks=["fgsm", "pgd", "lrpc", "lrpf"],
    masks=["lrp", "random"],
    stages=["coarse", "fine"],
    protocols=["fixed", "minimal", "first_success"],
)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rows = run(RunConfig(out=str(out), **SMALL, **MIXED))
    return out, rows


def test_every_plan_is_one_row_with_its_full_key(mixed_run):
    out, rows = mixed_run
    board = read_leaderboard(out / "leaderboard.csv")
    assert len(rows) == len(board) == len(RunConfig(**SMALL, **MIXED).plans()) == 8 + 12
    assert board[list(KEY)].notna().drop(columns=["eps", "steps"]).all().all()
    assert set(board["split"]) == {"test"} and set(board["n"]) == {6}
    assert set(board["model_hash"]) == {model_hash(load_model("shapes-vgg16"))}
    first = board[board["protocol"] == "first_success"]
    assert first["eps"].isna().all() and set(first["mask"]) == {"lrp", "random"}
    assert set(board.loc[board["protocol"] == "minimal", "eps"]) == {RunConfig().eps_max["linf"]}
    assert set(board.loc[board["attack"].isin(["fgsm", "pgd"]), "mask"]) == {"none"}


def test_aggregates_are_recomputed_exactly_from_the_records(mixed_run):
    out, _ = mixed_run
    board = read_leaderboard(out / "leaderboard.csv").set_index("row_id")
    records = load_records(out)
    assert set(records["row_id"]) == set(board.index)
    for rid, part in records.groupby("row_id"):
        assert sorted(part["index"]) == list(range(6))
        for column, value in aggregate(part).items():
            stored = board.loc[rid, column]
            if column == "severity_counts":  # text; "" (no image fooled) is an empty cell
                assert stored == value or (value == "" and pd.isna(stored)), column
                continue
            assert (math.isnan(value) and pd.isna(stored)) or stored == pytest.approx(value), column
    # every row of the shipped model (two levels) has its severities: LRPF's mistakes stay in
    # the coarse class (1), a coarse flip leaves it (2)
    assert (records["severity"] >= 0).all()
    fooled = records[records["success"]]
    assert (fooled.loc[fooled["attack"] == "lrpf", "severity"] == 1).all()
    assert (fooled.loc[fooled["stage"] == "coarse", "severity"] == 2).all()


def test_fixed_rows_stay_within_eps_and_minimal_rows_report_per_image_eps(mixed_run):
    out, _ = mixed_run
    records = load_records(out)
    fixed = records[(records["protocol"] == "fixed") & records["success"]]
    assert (fixed["linf"] <= fixed["key_eps"] + 1e-6).all()
    minimal = records[records["protocol"] == "minimal"]
    bound = RunConfig().eps_max["linf"]
    assert minimal["eps"].notna().all() and (minimal["eps"] <= bound + 1e-6).all()


def test_rerun_replaces_its_rows_and_another_seed_or_split_adds_rows(tmp_path):
    cfg = dict(out=str(tmp_path), attacks=["fgsm"], stages=["coarse"], protocols=["fixed"], **SMALL)
    run(RunConfig(**cfg))
    run(RunConfig(**cfg))
    assert len(read_leaderboard(tmp_path / "leaderboard.csv")) == 1
    run(RunConfig(**{**cfg, "seed": 1}))
    run(RunConfig(**{**cfg, "split": "val"}))
    run(RunConfig(**{**cfg, "n": 5}))
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert len(board) == 4 and len(set(board["row_id"])) == 4


def test_the_model_never_sees_more_than_one_batch(tmp_path, monkeypatch):
    """Memory is bounded by the batch size: attacks, records and figures all run in chunks."""
    seen = []
    model = load_model("shapes-vgg16")
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    monkeypatch.setattr("c2f_attacks.runner.execute.load_model", lambda *a, **k: model)
    run(RunConfig(out=str(tmp_path), attacks=["fgsm", "lrpc"], masks=["lrp"],
                  **{**SMALL, "n": 7, "batch_size": 3, "figures": True}))  # fmt: skip
    assert seen and max(seen) <= 3
    figures = tmp_path / "figures" / "shapes-vgg16"
    assert (figures / "lrpc_coarse_fixed_lrp.png").stat().st_size > 5_000
    assert (figures / "budget_coarse.png").exists()
    assert (figures / "budget_fine.png").exists()


def test_a_failing_figure_is_a_warning_after_the_leaderboard_is_written(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no canvas")

    monkeypatch.setattr("c2f_attacks.figures.budget_figure", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = run(RunConfig(out=str(tmp_path), attacks=["fgsm"], stages=["coarse"],
                             protocols=["fixed"], **{**SMALL, "figures": True}))  # fmt: skip
    assert len(rows) == 1 and (tmp_path / "leaderboard.csv").exists()
    messages = [str(w.message) for w in caught if issubclass(w.category, FigureWarning)]
    path = tmp_path / "figures" / "shapes-vgg16" / "budget_coarse.png"
    assert messages == [f"figure {path} not written: no canvas"]


def test_onnxruntime_backend_uses_a_file_under_out_and_agrees(tmp_path):
    rows = run(RunConfig(out=str(tmp_path), attacks=["pgd"], stages=["fine"], protocols=["fixed"],
                         backend="onnxruntime", **SMALL))  # fmt: skip
    digest = model_hash(load_model("shapes-vgg16"))
    assert (tmp_path / "onnx" / f"{digest}.onnx").stat().st_size > 100_000
    assert rows["backend_agreement"].tolist() == [1.0]
    assert rows["backend_fooling_ratio"].tolist() == rows["fooling_ratio"].tolist()
    assert rows["eval_backend"].tolist() == ["onnxruntime"]


def test_random_mask_rows_do_not_depend_on_the_batch_size(tmp_path, monkeypatch):
    """The random mask hashes (seed, global image index): the runner hands every batch its
    images' global indices, so each image gets the same mask in batches of 2 and of 5, at every
    call (the minimal protocol's search calls on sub-batches). The attack's own batch
    independence is asserted in float64 by the attack tests: in float32 a convolution may round
    differently in another batch size (a sign step makes that a full step), so the records of
    the two runs are equal only where the CPU's kernels are batch-independent."""
    masks: dict[int, torch.Tensor] = {}  # global image index -> its mask, every call alike
    select = RandomMask.select

    def spy(self, inputs):
        mask = select(self, inputs)
        for i, row in zip(inputs.index.tolist(), mask):
            assert torch.equal(masks.setdefault(i, row.clone()), row), f"image {i}"
        return mask

    monkeypatch.setattr(RandomMask, "select", spy)
    cfg = dict(attacks=["lrpc"], masks=["random"], **SMALL)
    for batch_size in (2, 5):
        run(RunConfig(out=str(tmp_path / str(batch_size)), **{**cfg, "batch_size": batch_size}))
        for _, row in load_records(tmp_path / str(batch_size)).groupby("row_id"):
            assert row["index"].tolist() == list(range(6))  # each protocol's row
    assert sorted(masks) == list(range(6))


def test_budgets_replace_the_grid_of_budget_curves(tmp_path):
    """--budgets reaches budget_curves.csv, written at the end from the streamed records."""
    cfg = dict(attacks=["fgsm"], stages=["coarse"], protocols=["minimal"], **SMALL)
    run(RunConfig(out=str(tmp_path), budgets={"linf": "1/255, 4/255"}, **cfg))
    curves = pd.read_csv(tmp_path / "budget_curves.csv")
    linf = curves[curves["norm"] == "linf"]
    np.testing.assert_allclose(sorted(set(linf["budget"])), [1 / 255, 4 / 255], rtol=1e-12)


def test_figure_folders_are_one_readable_name_per_model(tmp_path):
    assert figure_folder(tmp_path, "shapes-vgg16") == tmp_path / "figures" / "shapes-vgg16"
    assert figure_folder(tmp_path, "/ckpt/run 1/m.pt").name == "ckpt_run_1_m.pt"
    assert figure_folder(tmp_path, "pkg.mod:make").name == "pkg.mod_make"
    assert figure_folder(tmp_path, "../m.pt").parent == tmp_path / "figures"  # never outside


def test_model_hash_follows_weights_and_hierarchy():
    model = load_model("shapes-vgg16")
    digest = model_hash(model)
    assert digest == model_hash(load_model("shapes-vgg16")) and len(digest) == 12
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1.0
    assert model_hash(model) != digest


def test_external_rows_take_their_settings_and_budget_from_the_config(tmp_path):
    pytest.importorskip("torchattacks")
    config = tmp_path / "ta.toml"
    config.write_text('attacks = ["torchattacks:PGD"]\nstages = ["fine"]\nprotocols = ["fixed"]\n'
                      '[eps]\nlinf = 0.02\n[settings."torchattacks:PGD"]\nsteps = 2\n')  # fmt: skip
    (cfg,) = expand(config, {**SMALL, "out": str(tmp_path), "model": "shapes-vgg16"})
    rows = run(cfg)
    assert rows[["attack", "stage", "protocol", "mask", "success_rule"]].values.tolist() == [
        ["torchattacks:PGD", "fine", "fixed", "none", "fine_changed_coarse_kept"]
    ]
    assert rows["eps"].tolist() == [0.02] and rows["steps"].tolist() == [2]
    records = load_records(tmp_path)
    assert (records.loc[records["success"], "linf"] <= 0.02 + 1e-6).all()
    # the strict fine rule, recomputed from the recorded predictions
    assert records["success"].equals(records["fine_flipped_coarse_kept"])


def test_targeted_rows_run_beside_untargeted_ones(tmp_path):
    """--target none random: every targetable attack gets a row per policy (torchattacks'
    DeepFool, which has no targeted mode, the untargeted one only); a targeted row's key,
    records and figures follow its targets."""
    pytest.importorskip("torchattacks")
    cfg = RunConfig(out=str(tmp_path), **{**SMALL, "figures": True},
                    attacks=["pgd", "lrpf", "torchattacks:DeepFool"], masks=["lrp"],
                    stages=["fine"], protocols=["fixed", "minimal"], targets=["none", "random"],
                    model="shapes-vgg16")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", FigureWarning)
        rows = run(cfg)
    targeted = rows["config"].str.contains("target=random")
    assert sorted(rows.loc[targeted, "attack"]) == ["lrpf", "lrpf", "pgd", "pgd"]
    assert set(rows.loc[targeted, "success_rule"]) == {"target_reached"}
    assert set(rows.loc[~targeted, "success_rule"]) == {"fine_changed_coarse_kept"}
    assert len(rows) == 9 and rows["row_id"].nunique() == 9
    records = load_records(tmp_path)
    mine = records["config"].str.contains("target=random")
    assert (records.loc[~mine, "target_class"] == -1).all()
    aimed = records[mine]
    assert (aimed["target_class"] != aimed["clean_fine"]).all()
    assert aimed["success"].equals(aimed["adv_fine"] == aimed["target_class"])
    # the same image gets the same target in every row
    per_image = aimed.groupby("index")["target_class"].nunique()
    assert (per_image == 1).all()
    for rid, part in records.groupby("row_id"):
        row = rows.set_index("row_id").loc[rid]
        assert aggregate(part)["fooling_ratio"] == row["fooling_ratio"]
    folder = figure_folder(tmp_path, "shapes-vgg16")
    assert (folder / "pgd_fine_fixed_target_random.png").exists()
    # budget curves apart: a targeted row's fooling ratio counts images sent to their target
    assert (folder / "budget_fine.png").exists()
    assert (folder / "budget_fine_target_random.png").exists()


# ------------------------------------------------------------------- memory budget, batch sizes
def test_sizes_parse_in_powers_of_1024_and_bad_ones_name_the_text():
    assert memory.parse_size("4G") == 4 * 2**30 and memory.parse_size("512m") == 512 * 2**20
    assert memory.parse_size("1.5GiB") == 3 * 2**29 and memory.parse_size("800") == 800
    for bad in ("", "lots", "4X", "-1G", "0"):
        with pytest.raises(ValueError, match="--max-memory"):
            memory.parse_size(bad)
    with pytest.raises(ValueError, match="--max-memory 'lots' is not a size"):
        RunConfig(max_memory="lots")


def test_the_tensor_tracker_sees_the_peak_of_live_storages_exactly():
    kib = 2**10

    def step():
        a = torch.ones(64 * kib // 4)  # 64 KiB
        b = a + 1  # 128 KiB live
        view = b[::2]  # a view: no new storage
        del a
        c = torch.zeros(32 * kib // 4)  # 96 KiB live
        return view.sum() + c.sum()

    assert memory.measure_peak(step, torch.device("cpu")) == 128 * kib  # a and b at once


def test_a_budget_gives_the_largest_batch_that_fits_and_names_the_figure_when_none_does():
    cost = memory.RowCost("lrpc", per_image=100 * 2**20)
    budget = memory.Budget(total=2**30, held=400 * 2**20, given=True)
    assert budget.batch_size(cost) == 6 and budget.batch_size(cost, cap=4) == 4
    budget.check(cost, 6)
    with pytest.raises(ValueError, match="--batch-size 7 needs 1.07 GB for lrpc"):
        budget.check(cost, 7)
    tight = memory.Budget(total=450 * 2**20, held=400 * 2**20, given=True)
    with pytest.raises(ValueError) as err:
        tight.batch_size(cost)
    assert str(err.value) == (
        "--max-memory 450.00 MB is below what one image needs for lrpc: 500.00 MB (the process "
        "holds 400.00 MB, one image takes 100.00 MB); give --max-memory 500M or more"
    )


def test_a_max_memory_below_one_image_is_refused_before_any_batch(tmp_path):
    cfg = RunConfig(out=str(tmp_path), attacks=["lrpc"], masks=["lrp"], max_memory="1M", **SMALL)
    with pytest.raises(ValueError, match=r"below what one image needs for lrpc: .* give "
                                         r"--max-memory \d"):  # fmt: skip
        run(cfg)
    assert not (tmp_path / "records").exists() and not (tmp_path / "leaderboard.csv").exists()
    assert list(tmp_path.rglob("*.npz")) == []


def test_per_attack_batch_sizes_change_no_decision(tmp_path, monkeypatch):
    """Sizes from the budget (peaks fixed here: 6 images of 1 MB fit, so FGSM at 2 MB per
    image gets batches of 3, LRPC at 3 MB batches of 2) against one explicit batch of 6: equal
    records, but for the LRP maps' last float32 bits (relevance_shift)."""
    held, unit = 2**30, 2**20
    monkeypatch.setattr(memory, "held_bytes", lambda device: held)
    monkeypatch.setattr(memory, "activation_bound", lambda model, x: memory.RowCost("b", 2**40))
    peaks = iter([2 * unit, 3 * unit])  # per attack, in plan order: fgsm, lrpc
    monkeypatch.setattr(memory, "measure_peak", lambda step, device: next(peaks))
    budget = held + int(6 * memory.SAFETY * unit) + 1
    cfg = dict(attacks=["fgsm", "lrpc"], masks=["random"], stages=["coarse"], **SMALL)
    seen = set()
    real_step = execute._step

    def step(job, plan, atk, x, *args):
        seen.add((plan.attack, len(x)))
        return real_step(job, plan, atk, x, *args)

    monkeypatch.setattr(execute, "_step", step)
    sized = dict(max_memory=str(budget), batch_size=None)
    run(RunConfig(out=str(tmp_path / "sized"), **{**cfg, **sized}))
    # blocks of the largest batch, 3 images: LRPC attacks each in a batch of 2 and one of 1
    assert seen == {("fgsm", 3), ("lrpc", 2), ("lrpc", 1)}
    run(RunConfig(out=str(tmp_path / "one"), **{**cfg, "batch_size": 6}))
    sized, one = (
        load_records(tmp_path / d).sort_values(["row_id", "index"]) for d in ("sized", "one")
    )
    shift = ["relevance_shift"]
    pd.testing.assert_frame_equal(sized.drop(columns=shift).reset_index(drop=True),
                                  one.drop(columns=shift).reset_index(drop=True))  # fmt: skip
    assert (sized[shift].to_numpy() - one[shift].to_numpy()).__abs__().max() < 1e-5


# ------------------------------------------------------------------------ streamed adversarial
def test_adversarial_images_streamed_from_batches_equal_the_in_memory_row(tmp_path):
    """Batches saved out of order and read back one at a time (a run's batch files) give the
    file one in-memory row gives; read_back gives what load_adversarial reads."""
    model = load_model("shapes-vgg16")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=generator)
    x_adv = (x + 0.02 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    y = torch.zeros(5, dtype=torch.long)
    records = per_image_records(model, x, x_adv, y, "coarse", relevance=False)
    whole = AdversarialRow()
    whole.add(model, x, x_adv, y, records, "coarse")
    parts = [AdversarialBatch.compact(model, x[s], x_adv[s], y[s], records.iloc[s], "coarse")
             for s in (slice(3, 5), slice(0, 3))]  # fmt: skip
    key = {**dict.fromkeys(KEY, ""), "model": "m", "n": 5, "seed": 0}
    save_adversarial(tmp_path / "a", key, whole)
    save_adversarial(tmp_path / "b", key, [AdversarialBatch.from_arrays(p.to_arrays())
                                           for p in parts])  # fmt: skip
    a, b = load_adversarial(tmp_path / "a", key), load_adversarial(tmp_path / "b", key)
    assert a.meta == b.meta and a.meta["storage"] == "float16"
    for name in ("index", "stored", "changed"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert torch.equal(read_back(parts, [4, 1], x[[4, 1]]), a.x_adv(np.array([4, 1]), x[[4, 1]]))
    with pytest.raises(ValueError, match="image index 3 appears twice"):
        save_adversarial(tmp_path / "c", key, [parts[0], parts[0]])
