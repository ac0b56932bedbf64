"""Mistake severity in the per-image records (``severity``) and on the leaderboard
(``mistake_severity``, its interval, ``severity_counts``): LRPF's coarse-kept mistakes and LRPC's
coarse flips on a two-level hierarchy, hand-computed heights on a three-level tree, flat models
and records written before the column."""

import gzip
import math

import numpy as np
import pytest
import torch
from torch import nn

from c2f_attacks import Hierarchy
from c2f_attacks.evaluation import aggregate, load_records, per_image_records, write_records
from c2f_attacks.evaluation.records import FILE_COLUMNS, KEY
from c2f_attacks.evaluation.severity import SEVERITY_COLUMNS
from c2f_attacks.leaderboard import COLUMNS, SCHEMA, read_leaderboard
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.runner import RunConfig, run
from tests.conftest import TOY_TREE, small_cnn

CAT, DOG, WOLF, CAR, BUS, TRAM = range(6)


class ReadOffC2F(C2FClassifier):
    """A C2F model whose logits are read off the image: coarse from row 0, fine from row 1, so
    a test chooses its predictions exactly."""

    in_channels = 1

    def __init__(self, hierarchy: Hierarchy):
        super().__init__(hierarchy)
        self.scale = nn.Parameter(torch.tensor(1.0))

    def logits(self, x):
        m, k = self.hierarchy.num_coarse, self.hierarchy.num_fine
        return self.scale * x[:, 0, 0, :m], self.scale * x[:, 0, 1, :k]


def decided_as(model: ReadOffC2F, fine: list[int]) -> torch.Tensor:
    """Images the model decides as the fine classes ``fine`` (and their coarse classes)."""
    h = model.hierarchy
    x = torch.zeros(len(fine), 1, 2, h.num_fine)
    for i, f in enumerate(fine):
        x[i, 0, 0, int(h.fine_to_coarse[f])] = 1
        x[i, 0, 1, f] = 1
    return x


def test_records_severity_is_the_lca_height_on_a_three_level_tree():
    model = ReadOffC2F(Hierarchy.from_dict(TOY_TREE)).eval()
    clean = [CAT, CAT, CAT, CAR, CAR, WOLF, DOG]
    adv = [CAT, DOG, WOLF, BUS, TRAM, TRAM, CAR]
    heights = [0, 1, 3, 1, 2, 4, 4]  # by hand from the tree above
    x, x_adv, y = decided_as(model, clean), decided_as(model, adv), torch.tensor(clean)
    for stage in ("fine", "coarse"):  # the fine predictions' severity on either stage
        records = per_image_records(model, x, x_adv, y, stage, relevance=False, batch_size=3)
        assert records["severity"].tolist() == heights
        assert str(records["severity"].dtype) == "int64"
    # fine stage, any fine change: images 1-6 fooled
    row = aggregate(per_image_records(model, x, x_adv, y, "fine", relevance=False,
                                      criterion="stage_changed"))  # fmt: skip
    assert row["mistake_severity"] == pytest.approx((1 + 3 + 1 + 2 + 4 + 4) / 6)
    assert row["severity_counts"] == "1:2 2:1 3:1 4:2"
    assert 1 <= row["mistake_severity_lo"] <= row["mistake_severity"] <= row["mistake_severity_hi"]
    assert row["mistake_severity_hi"] <= 4
    # coarse stage: only the coarse flips are fooled: cat->wolf, wolf->tram, dog->car
    coarse = aggregate(per_image_records(model, x, x_adv, y, "coarse", relevance=False))
    assert coarse["severity_counts"] == "3:1 4:2" and coarse["mistake_severity"] == 11 / 3


def test_flat_models_have_no_severity():
    model = small_cnn(0)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    records = per_image_records(model, x, (x + 0.3).clamp(0, 1), torch.zeros(4, dtype=torch.long),
                                None, relevance=False)  # fmt: skip
    assert records["severity"].tolist() == [-1] * 4
    row = aggregate(records)
    assert all(math.isnan(row[c]) for c in SEVERITY_COLUMNS[:3]) and row["severity_counts"] == ""


@pytest.fixture(scope="module")
def two_level_run(tmp_path_factory):
    """LRPF and LRPC rows of a small run of the shipped model (a two-level hierarchy), unbounded
    and with a large step so that most of the 8 images are fooled in 10 steps."""
    out = tmp_path_factory.mktemp("severity-run")
    rows = run(RunConfig(out=str(out), model="shapes-vgg16", attacks=["lrpf", "lrpc"],
                         masks=["lrp"], protocols=["first_success"], n=8, batch_size=4,
                         figures=False, progress=False,
                         settings={"steps": 10, "refresh": 5, "alpha": 8 / 255}))  # fmt: skip
    return out, rows


@pytest.mark.parametrize(
    "attack, stage, rule, height",
    [("lrpf", "fine", "fine_changed_coarse_kept", 1), ("lrpc", "coarse", "stage_changed", 2)],
)
def test_lrpf_mistakes_stay_inside_the_superclass_and_lrpc_mistakes_cross_it(
    two_level_run, shipped, attack, stage, rule, height
):
    out, _ = two_level_run
    board = read_leaderboard(out / "leaderboard.csv")
    row = board[board["attack"] == attack].iloc[0]
    assert (row["stage"], row["success_rule"]) == (stage, rule)
    records = load_records(out)
    mine = records[records["row_id"] == row["row_id"]]
    # every image's severity is the hierarchy's, fooled or not
    expected = shipped.hierarchy.severity(torch.tensor(mine["clean_fine"].to_numpy()),
                                          torch.tensor(mine["adv_fine"].to_numpy()))  # fmt: skip
    assert mine["severity"].tolist() == expected.tolist()
    fooled = mine[mine["success"]]
    assert len(fooled) >= 4
    assert (fooled["severity"] == height).all()
    assert row["mistake_severity"] == row["mistake_severity_lo"] == height
    assert row["mistake_severity_hi"] == height and row["mistake_severity"] == float(height)
    assert row["severity_counts"] == f"{height}:{len(fooled)}"


def test_the_severity_columns_are_leaderboard_columns(two_level_run):
    out, rows = two_level_run
    assert set(SEVERITY_COLUMNS) <= set(COLUMNS) and set(SEVERITY_COLUMNS) <= set(rows.columns)
    assert SCHEMA["severity_counts"] == "text" and SCHEMA["mistake_severity"] == "float"
    board = read_leaderboard(out / "leaderboard.csv").set_index("row_id")
    stored = board.loc[rows["row_id"], "severity_counts"].tolist()
    assert stored == rows["severity_counts"].tolist()
    assert [c.split(":")[0] for c in stored] == ["1", "2"]  # lrpf, lrpc: one height each


def _without(path, columns: tuple[str, ...]) -> None:
    """Rewrite a records file as an earlier version wrote it: without ``columns``."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    keep = [i for i, c in enumerate(FILE_COLUMNS) if c not in columns]
    old = "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n"
    path.write_bytes(gzip.compress(old.encode(), mtime=0))


def test_records_written_before_the_severity_column_load_with_minus_one(tmp_path):
    model = ReadOffC2F(Hierarchy.from_dict(TOY_TREE)).eval()
    x, x_adv = decided_as(model, [CAT, CAR, WOLF]), decided_as(model, [DOG, TRAM, CAT])
    records = per_image_records(model, x, x_adv, torch.tensor([CAT, CAR, WOLF]), "fine",
                                relevance=False)  # fmt: skip
    records["target_class"] = np.array([DOG, TRAM, CAT])  # to tell the two old versions apart
    assert records["severity"].tolist() == [1, 2, 3]
    key = dict.fromkeys(KEY, "k") | {"n": 3, "seed": 0, "eps": 0.1, "steps": 1}
    path = write_records(tmp_path, key, records)
    assert aggregate(load_records(tmp_path))["severity_counts"] == "1:1 2:1 3:1"
    _without(path, ("severity",))  # written after target_class, before severity
    back = load_records(tmp_path)
    assert list(back.columns) == list(FILE_COLUMNS)
    assert back["severity"].tolist() == [-1] * 3 and str(back["severity"].dtype) == "int64"
    assert back["target_class"].tolist() == [DOG, TRAM, CAT]
    row = aggregate(back)
    assert all(math.isnan(row[c]) for c in SEVERITY_COLUMNS[:3]) and row["severity_counts"] == ""
    write_records(tmp_path, key, records)
    _without(path, ("target_class", "severity"))  # written before both
    back = load_records(tmp_path)
    assert back["severity"].tolist() == back["target_class"].tolist() == [-1] * 3
    assert back["adv_fine"].tolist() == [DOG, TRAM, CAT]
    write_records(tmp_path, key, records)
    _without(path, ("target_class",))  # never written: severity came after target_class
    with pytest.raises(ValueError, match="the header is not the records header"):
        load_records(tmp_path)
