import json

import pytest
import torch

from c2f_attacks import Hierarchy


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
    from c2f_attacks.hierarchies import cifar100_hierarchy, imagenet_hierarchy, imagenet_wnids

    c100 = cifar100_hierarchy()
    assert c100.num_coarse == 20 and set(c100.group_sizes) == {5}
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000
    inet = imagenet_hierarchy()
    assert set(inet.fine_names) <= set(wnids)
