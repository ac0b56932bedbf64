"""Models and hierarchies that would produce wrong numbers silently are refused: non-finite
weights, a hierarchy that is not the dataset's, a hierarchy JSON with a duplicate key; LRP on a
model in train mode leaves the model exactly as it was."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from c2f_attacks import Hierarchy, load_model
from c2f_attacks.data import ShapesC2F
from c2f_attacks.lrp import lrp, stage_relevance
from c2f_attacks.models import C2FVGG16, VGGConfig
from c2f_attacks.models.zoo import save_checkpoint

from ..conftest import TINY_HIERARCHY
from .conftest import run_args, run_in_process, stderr_lines


def _tiny(hierarchy: Hierarchy, **cfg) -> C2FVGG16:
    torch.manual_seed(0)
    cfg = {"width": 0.0625, "input_size": 32, "head_width": 16, **cfg}
    return C2FVGG16(hierarchy, VGGConfig(**cfg)).eval()


@pytest.fixture
def nan_checkpoint(tmp_path):
    """A checkpoint for the shapes data whose first conv weight holds a NaN (written behind the
    library's back: saving may refuse it too)."""
    path = tmp_path / "nan.pt"
    save_checkpoint(_tiny(ShapesC2F(1).hierarchy), path)
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name].view(-1)[0] = float("nan")
    torch.save(payload, path)
    return path


def test_nan_weights_are_refused_at_load(nan_checkpoint):
    with pytest.raises(ValueError) as info:
        load_model(nan_checkpoint)
    assert str(nan_checkpoint) in str(info.value)
    assert re.search(r"nan|finite", str(info.value), re.IGNORECASE)


def test_run_refuses_nan_weights_before_attacking(nan_checkpoint, tmp_path, attacked, capsys):
    capsys.readouterr()
    assert run_in_process(run_args(tmp_path / "out", "--model", str(nan_checkpoint))) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert str(nan_checkpoint) in err[0]
    assert not attacked


@pytest.fixture
def foreign_checkpoint(tmp_path):
    """A finite checkpoint built for another hierarchy than the shapes data's."""
    path = tmp_path / "foreign.pt"
    save_checkpoint(_tiny(Hierarchy.from_dict(TINY_HIERARCHY)), path)
    return path


@pytest.mark.parametrize("command", ["run", "accuracy"])
def test_hierarchy_mismatch_is_refused_with_the_difference_named(
    foreign_checkpoint, tmp_path, attacked, capsys, command
):
    args = (
        run_args(tmp_path / "out", "--model", str(foreign_checkpoint))
        if command == "run"
        else ["accuracy", "--model", str(foreign_checkpoint), "--num-images", "4"]
    )
    capsys.readouterr()
    assert run_in_process(args) == 2
    err = stderr_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert "animal" in err[0]  # a coarse class of the model's hierarchy that the data lacks
    assert not attacked


def test_duplicate_coarse_name_in_a_hierarchy_file_is_refused(tmp_path):
    path = tmp_path / "hierarchy.json"
    path.write_text('{"animal": ["cat"], "plant": ["tree"], "animal": ["dog"]}')
    with pytest.raises(ValueError, match="animal") as info:
        Hierarchy.from_json(path)
    assert str(path) in str(info.value)


def test_weights_only_refusal_does_not_advise_unsafe_loading(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": "c2f-attacks/checkpoint", "payload": argparse.Namespace(a=1)}, path)
    with pytest.raises(ValueError) as info:
        load_model(path)
    assert str(path) in str(info.value)
    # torch's own hint ("This file can still be loaded ... weights_only=False") must not be
    # passed on: the file may run arbitrary code.
    assert "can still be loaded" not in str(info.value)
    assert "weights_only=False" not in str(info.value)


def _state(model: torch.nn.Module) -> tuple[list, dict]:
    flags = [(name, m.training) for name, m in model.named_modules()]
    grads = [(name, p.requires_grad) for name, p in model.named_parameters()]
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    return flags + grads, tensors


def _flat_bn() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


@pytest.mark.parametrize("call", ["lrp", "stage_relevance"])
def test_lrp_in_train_mode_leaves_the_model_as_it_was(call):
    """BatchNorm statistics, every training flag (one set apart on purpose) and requires_grad are
    unchanged, and the relevance is eval mode's (repeated calls used to drift)."""
    if call == "lrp":
        model = _flat_bn().train()
        model[4].eval()
        model[0].weight.requires_grad_(False)

        def explain():
            return lrp(model, x, target=0)
    else:
        model = _tiny(Hierarchy.from_dict(TINY_HIERARCHY), batch_norm=True).train()
        model.coarse_head.eval()

        def explain():
            return stage_relevance(model, x, stage="coarse", target=0)

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    flags, tensors = _state(model)
    try:
        first, second = explain(), explain()
    except ValueError as err:  # refusing train mode (documented) is allowed too
        assert "train" in str(err)
        first = second = None
    after_flags, after_tensors = _state(model)
    assert after_flags == flags
    for name, value in tensors.items():
        assert torch.equal(after_tensors[name], value), f"{name} changed"
    if first is not None:
        torch.testing.assert_close(first, second)
        model.eval()
        torch.testing.assert_close(first, explain())
