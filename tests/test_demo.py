"""The photo demo's plumbing on a tiny stand-in model (the real run uses EfficientNet-Lite0)."""

import argparse

import pandas as pd
import pytest
import torch
from torch import nn

from c2f_attacks.demo import add_demo_parser, run_photo_demo
from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.models import InducedC2F

pytest.importorskip("skimage", reason="the photos ship with scikit-image (extra [photos])")


def stand_in() -> InducedC2F:
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 1000))  # fmt: skip
    return InducedC2F(flat, imagenet_hierarchy(), mean=(0.5,) * 3, std=(0.5,) * 3).eval()


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


def test_demo_validates_settings_before_attacking(tmp_path):
    with pytest.raises(ValueError, match="unknown demo attack 'cw'"):
        run_photo_demo(tmp_path, ["chelsea"], model=stand_in(), attacks=["cw"])
    with pytest.raises(ValueError, match="unknown photo 'lena'"):
        run_photo_demo(tmp_path, ["lena"], model=stand_in(), steps=1)
    assert not list(tmp_path.iterdir())


def test_demo_parser():
    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "photos", "--photos", "coffee", "--controls", "--steps", "5"])
    assert args.photos == ["coffee"] and args.controls and args.steps == 5 and callable(args.func)
