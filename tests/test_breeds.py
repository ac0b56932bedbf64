"""The shipped BREEDS hierarchies (sizes, ImageNet classes, trees, provenance) and their
derivation (scripts/derive_breeds.py) on a constructed miniature of the published file formats:
the published files are not in the repository and the tests run offline."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

from c2f_attacks import Hierarchy
from c2f_attacks.hierarchies import (
    BREEDS_FILES,
    get_hierarchy,
    hierarchy_about,
    imagenet_wnids,
    list_hierarchies,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "derive_breeds.py"
SIZES = {"breeds-entity13": (13, 20), "breeds-entity30": (30, 8), "breeds-living17": (17, 4),
         "breeds-nonliving26": (26, 4)}  # fmt: skip


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(SCRIPT), run_name="derive_breeds")


# ------------------------------------------------------------------------ the shipped files
@pytest.mark.parametrize("name", sorted(SIZES))
def test_shipped_breeds_hierarchies_have_the_published_sizes(name):
    h = get_hierarchy(name)
    superclasses, per = SIZES[name]
    assert h.num_coarse == superclasses and h.group_sizes == [per] * superclasses
    assert set(h.fine_names) <= set(imagenet_wnids())
    assert name in list_hierarchies()


@pytest.mark.parametrize("name", sorted(SIZES))
def test_shipped_breeds_trees_hang_every_superclass_below_its_node(name):
    h, about = get_hierarchy(name), hierarchy_about(name)
    assert h.ancestors is not None
    nodes = about["superclass_nodes"]
    assert list(nodes) == h.coarse_names
    for c, coarse in enumerate(h.coarse_names):
        for f in h.fine_names[h.offsets[c] : h.offsets[c + 1]]:
            path = h.ancestors[f]
            assert path[0] == "n00001740"  # entity
            assert path[about["rules"]["level"]] == nodes[coarse]  # the superclass's level
    # a mistake across two superclasses is more severe than any inside either of them
    k = torch.arange(h.num_fine)
    severity = h.severity(k[:, None], k[None, :])
    coarse = h.fine_to_coarse
    inside = torch.stack([severity[coarse == c][:, coarse == c].max() for c in range(h.num_coarse)])
    across = coarse[:, None] != coarse[None, :]
    bound = torch.maximum(inside[coarse][:, None], inside[coarse][None, :])
    assert (severity[across] > bound[across]).all()


@pytest.mark.parametrize("name", sorted(SIZES))
def test_shipped_breeds_files_record_their_provenance(name, script):
    about = hierarchy_about(name)
    assert about["name"] == name
    assert about["source_sha256"] == script["SOURCE_SHA256"]
    assert script["SOURCE_COMMIT"] in about["source"] and "BREEDS-Benchmarks" in about["source"]
    assert "no license file" in about["license"] and "MIT" in about["license"]
    assert about["derived_by"] == "scripts/derive_breeds.py"
    rule = script["BENCHMARKS"][name]
    assert about["rules"]["level"] == rule.level
    assert about["rules"]["subclasses_per_superclass"] == rule.subclasses
    # the two domains split every superclass in halves
    h = get_hierarchy(name)
    for c, coarse in enumerate(h.coarse_names):
        source, target = about["source_domain"][coarse], about["target_domain"][coarse]
        assert len(source) == len(target) and not set(source) & set(target)
        assert sorted(source + target) == sorted(h.fine_names[h.offsets[c] : h.offsets[c + 1]])


def test_every_breeds_name_has_a_file_and_a_rule(script):
    assert set(BREEDS_FILES) == set(script["BENCHMARKS"]) == set(SIZES)


def test_unknown_hierarchy_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown hierarchy 'breeds-living18'; known: .*breeds-"):
        get_hierarchy("breeds-living18")
    with pytest.raises(ValueError, match="unknown hierarchy 'nope'"):
        hierarchy_about("nope")


# ------------------------------------------------------------------------ the derivation
ROOT = "n00001740"
# entity -> living (L) -> animal (A) -> dog (D): c0 c1; cat (X) -> chain (Y): c2 c3
#                      -> plant (P) -> flower (F): c4
#        -> thing (T) -> vehicle (V) -> wheeled (W): c5 c6 c7 c8
# c9 is in no edge (as ImageNet's toilet tissue in the published file)
EDGES = [(ROOT, "nL"), (ROOT, "nT"), ("nL", "nA"), ("nL", "nP"), ("nA", "nD"), ("nA", "nX"),
         ("nX", "nY"), ("nY", "c2"), ("nY", "c3"), ("nD", "c0"), ("nD", "c1"), ("nP", "nF"),
         ("nF", "c4"), ("nT", "nV"), ("nV", "nW"), ("nW", "c5"), ("nW", "c6"), ("nW", "c7"),
         ("nW", "c8"), ("zz", "unrelated")]  # fmt: skip
NAMES = {ROOT: "entity", "nL": "living thing", "nT": "thing", "nA": "animal", "nP": "plant",
         "nD": "dog, domestic dog", "nX": "cat, true cat", "nY": "feline chain",
         "nF": "flower", "nV": "vehicle", "nW": "wheeled vehicle"}  # fmt: skip
CLASSES = [f"c{i}" for i in range(10)]


def write_miniature(folder: Path, edges=EDGES, names=NAMES, classes=CLASSES) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "class_hierarchy.txt").write_text("".join(f"{p} {c}\n" for p, c in edges))
    (folder / "node_names.txt").write_text("".join(f"{n}\t{v}\n" for n, v in names.items()))
    info = [[i, wnid, f"class {wnid}"] for i, wnid in enumerate(classes)]
    (folder / "dataset_class_info.json").write_text(json.dumps(info))
    return folder


@pytest.fixture
def miniature(tmp_path, script):
    return script["read_source"](write_miniature(tmp_path / "modified"))


def test_read_source_parses_the_three_formats(miniature):
    assert miniature.edges[0] == (ROOT, "nL")
    assert miniature.node_names["nD"] == "dog, domestic dog"
    assert miniature.classes == CLASSES
    assert set(miniature.sha256) == {"class_hierarchy.txt", "node_names.txt",
                                     "dataset_class_info.json"}  # fmt: skip


def test_superclasses_are_the_nodes_at_the_level_with_enough_classes(script, miniature):
    rule = script["BreedsRule"]("MINI", level=3, ancestor=None, subclasses=2)
    tree = script["BreedsTree"](miniature.edges, miniature.classes)
    chosen = script["select"](tree, rule)
    # level 3 in id order: nD, nF, nW, nX; nF has one class only and is dropped
    assert [s.node for s in chosen] == ["nD", "nW", "nX"]
    by_node = {s.node: s for s in chosen}
    assert sorted(by_node["nD"].source + by_node["nD"].target) == ["c0", "c1"]
    # the single-child chain nX -> nY is walked down to the branching node
    assert sorted(by_node["nX"].source + by_node["nX"].target) == ["c2", "c3"]
    # One RandomState(2) for the whole benchmark, in superclass order, called as BREEDS calls it
    # (NumPy's legacy stream is frozen): rng.choice(["c0", "c1"], 2, replace=False) gives c1, c0;
    # then rng.choice(["c5", "c6", "c7", "c8"], 2, ...) c7, c5; then rng.choice(["c2", "c3"], ...)
    # c3, c2. The first half of a draw is the source domain, the second the target.
    assert (by_node["nD"].source, by_node["nD"].target) == (["c1"], ["c0"])
    assert (by_node["nW"].source, by_node["nW"].target) == (["c7"], ["c5"])
    assert (by_node["nX"].source, by_node["nX"].target) == (["c3"], ["c2"])
    within = script["select"](tree, script["BreedsRule"]("MINI", 3, "nL", 2))
    assert [s.node for s in within] == ["nD", "nX"]  # below the ancestor only


def test_derived_document_is_a_hierarchy_with_its_tree_and_provenance(script, miniature):
    rule = script["BreedsRule"]("MINI", level=3, ancestor="nL", subclasses=2)
    document = script["derive"](miniature, "mini", rule)
    assert document["groups"] == {"dog": ["c0", "c1"], "cat": ["c2", "c3"]}
    assert document["ancestors"]["c2"] == [ROOT, "nL", "nA", "nX", "nY"]
    about = document["about"]
    assert about["source_sha256"] == miniature.sha256
    assert about["superclass_nodes"] == {"dog": "nD", "cat": "nX"}
    assert about["node_names"]["nY"] == "feline chain"
    h = Hierarchy.from_dict(json.loads(script["document_json"](document)))
    assert h.coarse_names == ["dog", "cat"]
    # cat vs dog: their lowest common ancestor nA sits 3 above c2 (nA > nX > nY > c2)
    assert h.severity(torch.tensor([0, 0, 2]), torch.tensor([1, 2, 3])).tolist() == [1, 3, 1]


@pytest.mark.parametrize(
    "edges, names, classes, message",
    [
        ([*EDGES, ("nT", "nD")], NAMES, CLASSES, "node nD has 2 parents"),
        ([*EDGES, ("c0", "c9")], NAMES, CLASSES, "ImageNet class c0 has nodes below it"),
        (EDGES, {**NAMES, "nX": "dog, another"}, CLASSES, "two superclasses are named 'dog'"),
    ],
)
def test_derivation_refuses_what_it_cannot_reproduce(
    script, tmp_path, edges, names, classes, message
):
    source = script["read_source"](write_miniature(tmp_path / "m", edges, names, classes))
    rule = script["BreedsRule"]("MINI", level=3, ancestor="nL", subclasses=2)
    with pytest.raises(ValueError, match=message):
        script["derive"](source, "mini", rule)


def test_an_odd_number_of_subclasses_cannot_be_split_in_two_domains(script):
    tree = script["BreedsTree"](EDGES, CLASSES)
    with pytest.raises(ValueError, match="must be even"):
        script["select"](tree, script["BreedsRule"]("MINI", 3, None, 3))


def test_read_errors_name_the_file_and_line(script, tmp_path):
    folder = write_miniature(tmp_path / "m")
    (folder / "class_hierarchy.txt").write_text(f"{ROOT} nL\nonly-one-field\n")
    with pytest.raises(ValueError, match=r"class_hierarchy.txt:2: expected 'parent child'"):
        script["read_source"](folder)
    (folder / "class_hierarchy.txt").unlink()
    with pytest.raises(ValueError, match="cannot read .*class_hierarchy.txt"):
        script["read_source"](folder)


def test_main_refuses_files_other_than_the_published_ones(script, tmp_path, capsys):
    folder = write_miniature(tmp_path / "m")
    out = tmp_path / "out"
    assert script["main"]([str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not the published file (sha256" in err and err.count("\n") == 1
    assert not out.exists()  # nothing written
