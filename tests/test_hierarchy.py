import json
from importlib import resources

import pytest
import torch

from c2f_attacks import Hierarchy
from c2f_attacks.hierarchies import imagenet_class_names, imagenet_hierarchy, imagenet_wnids
from c2f_attacks.hierarchies import imagenet_grouping as grouping
from c2f_attacks.hierarchy import check_same_hierarchy, hierarchy_difference
from tests.conftest import TINY_HIERARCHY, TOY_TREE


def test_indices_are_laid_out_group_by_group(tiny_hierarchy):
    h = tiny_hierarchy
    assert h.coarse_names == ["animal", "vehicle", "plant"]
    assert h.fine_names == ["cat", "dog", "cow", "car", "bus", "tree"]
    assert h.num_coarse == 3 and h.num_fine == 6
    assert h.coarse_of(torch.tensor([0, 2, 3, 5])).tolist() == [0, 0, 1, 2]
    assert list(h.fines_of(1)) == [3, 4]
    assert h.group_mask().sum(1).tolist() == [3, 2, 1]


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({}, "no coarse classes"),
        ({"a": ["x"], "b": []}, "'b' has no fine classes"),
        ({"a": ["x", "y"], "b": ["y"]}, "'y' appears in two groups: 'a' and 'b'"),
        ({"a": ["x", "x"]}, "'x' appears twice in coarse class 'a'"),
        ({"a": "xyz"}, "'a' must map to a list"),
        ({"a": ["x", ""]}, "non-empty strings"),
    ],
)
def test_invalid_hierarchies_name_the_offender(mapping, message):
    with pytest.raises(ValueError, match=message):
        Hierarchy.from_dict(mapping)


def test_json_round_trip_and_file_errors(tmp_path, tiny_hierarchy):
    path = tiny_hierarchy.to_json(tmp_path / "h.json")
    assert Hierarchy.from_json(path) == tiny_hierarchy
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        Hierarchy.from_json(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text(json.dumps({"a": ["x"], "b": ["x"]}))
    with pytest.raises(ValueError, match="dup.json.*'x' appears in two groups"):
        Hierarchy.from_json(tmp_path / "dup.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Hierarchy.from_json(tmp_path / "missing.json")


def test_coarse_of_rejects_out_of_range_and_float(tiny_hierarchy):
    with pytest.raises(ValueError, match="fine index 6 is outside 0..5"):
        tiny_hierarchy.coarse_of(torch.tensor([1, 6]))
    with pytest.raises(TypeError, match="integers"):
        tiny_hierarchy.coarse_of(torch.tensor([1.0]))


def test_shipped_groupings_are_valid():
    from c2f_attacks.hierarchies import cifar100_hierarchy

    c100 = cifar100_hierarchy()
    assert c100.num_coarse == 20 and set(c100.group_sizes) == {5}


def test_json_with_a_duplicate_coarse_name_is_refused(tmp_path):
    # json.loads would keep only the last group: the first group's classes would vanish.
    path = tmp_path / "h.json"
    path.write_text('{"animal": ["cat"], "vehicle": ["car"], "animal": ["dog"]}')
    with pytest.raises(ValueError, match="h.json: duplicate key 'animal'"):
        Hierarchy.from_json(path)


# ------------------------------------------------------------------------ differences
def test_hierarchy_difference_names_every_kind_of_difference(tiny_hierarchy):
    assert hierarchy_difference(tiny_hierarchy, Hierarchy.from_dict(TINY_HIERARCHY)) == ""
    other = Hierarchy.from_dict(
        {"animal": ["cat", "dog"], "vehicle": ["car", "bus", "cow"], "rock": ["granite"]}
    )
    diff = hierarchy_difference(tiny_hierarchy, other, names=("model", "data"))
    assert "coarse classes only in model: 'plant'" in diff
    assert "fine classes only in model: 'tree'" in diff
    assert "coarse classes only in data: 'rock'" in diff
    assert "fine classes only in data: 'granite'" in diff
    assert "'cow' ('animal' in model, 'vehicle' in data)" in diff


def test_hierarchy_difference_names_a_reordering(tiny_hierarchy):
    swapped = dict(TINY_HIERARCHY)
    swapped["animal"] = ["dog", "cat", "cow"]
    diff = hierarchy_difference(tiny_hierarchy, Hierarchy.from_dict(swapped))
    assert diff == "same groups in another order: fine index 0 is 'cat' in a, 'dog' in b"
    reordered = Hierarchy.from_dict(dict(reversed(TINY_HIERARCHY.items())))
    assert "fine index 0 is 'cat' in a, 'tree' in b" in hierarchy_difference(
        tiny_hierarchy, reordered
    )


def test_output_index_maps_fine_classes_to_flat_outputs(tiny_hierarchy):
    outputs = ["bus", "x", "tree", "cat", "car", "cow", "dog"]
    index = tiny_hierarchy.output_index(outputs, "the outputs")
    assert [outputs[i] for i in index] == tiny_hierarchy.fine_names
    with pytest.raises(ValueError, match=r"2 fine classes .* outputs; the first is 'cat'"):
        tiny_hierarchy.output_index(["dog", "cow", "car", "bus"], "the outputs")


def test_check_same_hierarchy(tiny_hierarchy):
    check_same_hierarchy(tiny_hierarchy, Hierarchy.from_dict(TINY_HIERARCHY), ("m", "d"))
    with pytest.raises(
        ValueError,
        match="hierarchies of model x and dataset y differ: .*'dog', 'cow', 'car' and 2 more",
    ):
        check_same_hierarchy(
            tiny_hierarchy, Hierarchy.from_dict({"a": ["cat"]}), ("model x", "dataset y")
        )


# ------------------------------------------------------------------------ ImageNet grouping
def test_imagenet_grouping_is_rederived_from_the_shipped_wordnet_data():
    shipped = (resources.files("c2f_attacks.hierarchies") / grouping.GROUPING_FILE).read_text()
    derived = grouping.derive_grouping(grouping.shipped_hypernyms(), imagenet_wnids())
    assert grouping.grouping_json(derived) == shipped


def test_imagenet_grouping_puts_every_class_in_exactly_one_group():
    h = imagenet_hierarchy()
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000
    assert sorted(h.fine_names) == sorted(wnids) and h.num_fine == 1000  # no class twice
    assert h.coarse_names == list(dict.fromkeys(name for name, _ in grouping.CUT))
    assert min(h.group_sizes) >= 3
    names = imagenet_class_names()
    coarse = {names[f]: h.coarse_names[int(c)] for f, c in zip(h.fine_names, h.fine_to_coarse)}
    expected = {"tiger cat": "feline", "espresso": "food", "moped": "vehicle",
                "golden retriever": "dog", "goldfish": "fish", "daisy": "plant_fungus",
                "scuba diver": "person", "volcano": "landscape", "monarch": "insect",
                "grand piano": "musical_instrument", "timber wolf": "wild_canine"}  # fmt: skip
    assert {k: coarse[k] for k in expected} == expected
    # inside a group, ImageNet's class order
    for c in range(h.num_coarse):
        members = [wnids.index(f) for f in h.fine_names[h.offsets[c] : h.offsets[c + 1]]]
        assert members == sorted(members)


DATA_NOUN = """\
  1 This software and database is provided to you, the LICENSEE, by Princeton University
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04431553 n 0000 | that which
00000010 03 n 01 animal 0 002 @ 00001740 n 0000 ~ 00000020 n 0000 | a living thing
00000011 03 n 02 pet 0 house_pet 0 001 @ 00001740 n 0000 | kept animal
00000020 05 n 01 dog 0 003 @ 00000010 n 0000 @ 00000011 n 0000 + 01234567 v 0101 | a canine
00000030 05 n 01 Lassie 0 001 @i 00000020 n 0000 | a famous dog
00000040 05 n 01 rock 0 001 @ 00001740 n 0000 | a stone
"""


def test_wordnet_extraction_and_the_ordered_cut(tmp_path):
    path = tmp_path / "data.noun"
    path.write_text(DATA_NOUN)
    synsets = grouping.read_wordnet_nouns(path)
    assert synsets["n00000020"] == ("dog", ("n00000010", "n00000011"))  # verb pointer ignored
    assert synsets["n00000030"] == ("Lassie", ("n00000020",))  # instance hypernym kept
    assert synsets["n00000011"] == ("pet", ("n00001740",))  # two lemmas skipped correctly
    hypernyms = grouping.extract_hypernyms(synsets, ["n00000030", "n00000040"])
    assert set(hypernyms) == {"n00000030", "n00000020", "n00000010", "n00000011", "n00000040",
                              "n00001740"}  # fmt: skip
    assert grouping.parse_hypernyms(grouping.format_hypernyms(hypernyms)) == hypernyms
    wnids = ["n00000030", "n00000040", "n00000020"]
    # Lassie and dog are both animals and pets: the earlier cut entry wins.
    cut = [("pets", "n00000011"), ("animals", "n00000010"), ("things", "n00001740")]
    assert grouping.derive_grouping(hypernyms, wnids, cut) == {
        "pets": ["n00000030", "n00000020"], "things": ["n00000040"]}  # fmt: skip
    cut = [("animals", "n00000010"), ("pets", "n00000011")]
    with pytest.raises(ValueError, match="class n00000040 is under no synset of the cut"):
        grouping.derive_grouping(hypernyms, wnids, cut)
    path.write_text("00000010 03 n xx\n")
    with pytest.raises(ValueError, match="data.noun:1: not a WordNet data.noun line"):
        grouping.read_wordnet_nouns(path)


# ------------------------------------------------------------------------ trees and severity
def test_two_level_severity_is_one_inside_a_coarse_class_and_two_across(tiny_hierarchy):
    h = tiny_hierarchy  # animal: cat dog cow | vehicle: car bus | plant: tree
    k = torch.arange(h.num_fine)
    severity = h.severity(k[:, None], k[None, :])
    assert severity.dtype == torch.long and severity.shape == (6, 6)
    assert severity.tolist() == [
        [0, 1, 1, 2, 2, 2],
        [1, 0, 1, 2, 2, 2],
        [1, 1, 0, 2, 2, 2],
        [2, 2, 2, 0, 1, 2],
        [2, 2, 2, 1, 0, 2],
        [2, 2, 2, 2, 2, 0],
    ]


def test_severity_on_a_three_level_tree_is_the_height_of_the_lowest_common_ancestor():
    h = Hierarchy.from_dict(TOY_TREE)
    cat, dog, wolf, car, bus, tram = range(6)
    # heights (longest way down to a class): pet 1, canid 1, wild 2, animal 3, road 1,
    # vehicle 2, entity 4
    pairs = {(cat, cat): 0, (cat, dog): 1, (cat, wolf): 3, (dog, wolf): 3, (car, bus): 1,
             (car, tram): 2, (bus, tram): 2, (cat, car): 4, (wolf, tram): 4}  # fmt: skip
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    assert h.severity(a, b).tolist() == list(pairs.values())
    assert h.severity(b, a).tolist() == list(pairs.values())  # symmetric
    # batched: broadcast like any tensor op
    assert h.severity(torch.tensor([[cat], [car]]), torch.tensor([dog, bus])).tolist() == [
        [1, 4],
        [4, 1],
    ]


def test_severity_checks_its_indices(tiny_hierarchy):
    with pytest.raises(ValueError, match="fine index 6 is outside 0..5"):
        tiny_hierarchy.severity(torch.tensor([0]), torch.tensor([6]))
    with pytest.raises(TypeError, match="integers"):
        tiny_hierarchy.severity(torch.tensor([0.0]), torch.tensor([1]))


def test_a_tree_round_trips_through_json_and_counts_in_equality(tmp_path):
    h = Hierarchy.from_dict(TOY_TREE)
    assert h.to_dict() == TOY_TREE
    path = h.to_json(tmp_path / "tree.json")
    again = Hierarchy.from_json(path)
    assert again == h and hash(again) == hash(h)
    assert again.ancestors == {f: tuple(p) for f, p in TOY_TREE["ancestors"].items()}
    two_levels = Hierarchy.from_dict(TOY_TREE["groups"])
    assert two_levels != h and two_levels.ancestors is None
    other_tree = json.loads(json.dumps(TOY_TREE))
    other_tree["ancestors"]["tram"] = ["entity", "vehicle", "rail"]
    assert Hierarchy.from_dict(other_tree) != h
    # "about" describes a file and is not part of the hierarchy
    assert Hierarchy.from_dict({**TOY_TREE, "about": {"source": "somewhere"}}) == h
    assert Hierarchy.from_dict({"groups": TOY_TREE["groups"], "about": {}}) == two_levels


def test_a_two_level_hierarchy_serializes_exactly_as_before(tiny_hierarchy):
    # checkpoints store to_dict() and model hashes digest json.dumps(to_dict()): unchanged bytes
    assert json.dumps(tiny_hierarchy.to_dict()) == json.dumps(TINY_HIERARCHY)


def _tree_with(**changes) -> dict:
    tree = json.loads(json.dumps(TOY_TREE))
    tree["ancestors"].update(changes)
    return tree


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({**TOY_TREE, "ancestors": {k: v for k, v in TOY_TREE["ancestors"].items() if k != "bus"}},
         "fine class 'bus' has no ancestor path"),
        (_tree_with(lion=["entity"]), "ancestor path given for 'lion', which is not a fine class"),
        (_tree_with(bus="entity"), "the ancestor path of 'bus' must be a non-empty list"),
        (_tree_with(bus=[]), "the ancestor path of 'bus' must be a non-empty list"),
        (_tree_with(bus=["entity", ""]), "the path of 'bus' has ''"),
        (_tree_with(bus=["thing", "vehicle", "road"]),
         "two roots: 'entity' \\(path of 'cat'\\) and 'thing' \\(path of 'bus'\\)"),
        (_tree_with(bus=["entity", "animal", "road"]),
         "node 'road' has two parents: 'vehicle' \\(path of 'car'\\) and 'animal'"),
        (_tree_with(bus=["entity", "vehicle", "car"]),
         "fine class 'car' appears inside the ancestor path of 'bus'"),
        (_tree_with(bus=["entity", "vehicle", "entity"]), "node 'entity' appears twice"),
        (_tree_with(tram=["entity", "animal"]),
         "coarse class 'vehicle' is not a subtree .* lowest common ancestor 'entity' is also "
         "above 'cat' of coarse class 'pet'"),
        ({**TOY_TREE, "extra": 1}, "unknown key 'extra' beside 'groups'"),
        ({**TOY_TREE, "ancestors": ["cat"]}, "'ancestors' must map every fine class"),
    ],
)  # fmt: skip
def test_invalid_trees_name_the_offender(mapping, message):
    with pytest.raises(ValueError, match=message):
        Hierarchy.from_dict(mapping)


def test_hierarchy_difference_names_a_tree_difference():
    h = Hierarchy.from_dict(TOY_TREE)
    two_levels = Hierarchy.from_dict(TOY_TREE["groups"])
    assert hierarchy_difference(h, two_levels, ("model", "data")) == (
        "model has an ancestor tree, data has none (two levels)"
    )
    other = Hierarchy.from_dict(_tree_with(tram=["entity", "vehicle", "rail"]))
    assert hierarchy_difference(h, other) == (
        "the ancestor path of 'tram' differs: entity > vehicle in a, entity > vehicle > rail in b"
    )
    with pytest.raises(ValueError, match="hierarchies of m and d differ: the ancestor path"):
        check_same_hierarchy(h, other, ("m", "d"))
