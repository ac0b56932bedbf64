import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from c2f_attacks import Hierarchy
from c2f_attacks.data import (
    SHAPES_HIERARCHY,
    SHAPES_MAX_IMAGES,
    ShapesC2F,
    cifar10,
    cifar100,
    even_subset,
    get_dataset,
    imagenet,
    load_photos,
)
from c2f_attacks.hierarchies import CIFAR10_HIERARCHY, cifar100_hierarchy, imagenet_hierarchy

# ---------------------------------------------------------------------------------- shapes


def test_shapes_is_deterministic_per_seed_and_index():
    a, b = ShapesC2F(30, seed=3), ShapesC2F(60, seed=3)
    for i in (0, 7, 29):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
        assert torch.equal(a.object_mask(i), b.object_mask(i))
    assert not torch.equal(ShapesC2F(5, seed=4)[0][0], a[0][0])


def test_shapes_content():
    ds = ShapesC2F(120, seed=0)
    x, y, masks = ds.tensors()
    assert SHAPES_HIERARCHY.num_coarse >= 4 and set(SHAPES_HIERARCHY.group_sizes) == {3}
    assert x.shape == (120, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert torch.bincount(y, minlength=12).tolist() == [10] * 12
    coverage = masks.float().mean(dim=(1, 2))
    assert (coverage > 0.03).all() and (coverage < 0.7).all()
    # The object is visible: its pixels differ from the surrounding background.
    inside = (x * masks[:, None]).sum((2, 3)) / masks[:, None].sum((2, 3))
    outside = (x * ~masks[:, None]).sum((2, 3)) / (~masks[:, None]).sum((2, 3))
    assert ((inside - outside).norm(dim=1) > 0.1).float().mean() > 0.9
    assert ShapesC2F(4, size=64)[0][0].shape == (3, 64, 64)


def test_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        ShapesC2F(0)
    with pytest.raises(IndexError, match="index 5 out of range for 5"):
        ShapesC2F(5)[5]


# ---------------------------------------------------------------------------------- CIFAR


def _write_cifar10(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    # The real files are Python 2 pickles: their str keys and names load as str under the
    # encoding="latin1" that torchvision uses, which is what str keys give here.
    batch = {"batch_label": "testing batch 1 of 1", "labels": labels, "data": data,
             "filenames": [f"img{i}.png" for i in range(n)]}  # fmt: skip
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": names, "num_cases_per_batch": n, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return data, labels, names


def test_cifar10_reads_the_real_pickle_layout(tmp_path):
    data, labels, names = _write_cifar10(tmp_path)
    ds = cifar10(tmp_path)
    assert len(ds) == 20 and ds.hierarchy == CIFAR10_HIERARCHY
    for i in (0, 5, 19):
        image, fine = ds[i]
        assert image.shape == (3, 32, 32)
        expected = torch.from_numpy(data[i].reshape(3, 32, 32)).float() / 255
        torch.testing.assert_close(image, expected)
        assert CIFAR10_HIERARCHY.fine_names[fine] == names[labels[i]]
    coarse = CIFAR10_HIERARCHY.coarse_of(ds.targets)
    vehicles = {"airplane", "automobile", "ship", "truck"}
    assert coarse.tolist() == [0 if names[t] in vehicles else 1 for t in labels]


def test_cifar100_reads_the_real_pickle_layout_and_matches_the_official_superclasses(tmp_path):
    h = cifar100_hierarchy()
    fine_names = sorted(h.fine_names)  # the meta file lists fine names alphabetically
    coarse_names = sorted(h.coarse_names)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    fine = [int(v) for v in rng.permutation(100)[:30]]
    coarse_of_name = {f: c for c in h.coarse_names for f in h.to_dict()[c]}
    coarse = [coarse_names.index(coarse_of_name[fine_names[f]]) for f in fine]
    data = rng.integers(0, 256, (30, 3072), dtype=np.uint8)
    entry = {"filenames": ["x.png"] * 30, "batch_label": "testing batch 1 of 1",
             "fine_labels": fine, "coarse_labels": coarse, "data": data}  # fmt: skip
    (folder / "test").write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))

    ds = cifar100(tmp_path)
    targets = ds.targets
    assert [h.fine_names[t] for t in targets] == [fine_names[f] for f in fine]
    assert [h.coarse_names[c] for c in h.coarse_of(targets)] == [coarse_names[c] for c in coarse]


def test_cifar_missing_or_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        cifar10(tmp_path)
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read CIFAR10"):
        cifar10(tmp_path)


# ---------------------------------------------------------------------------------- ImageNet


def test_imagenet_synset_folders(tmp_path):
    h = imagenet_hierarchy()
    chosen = [h.fine_names[0], h.fine_names[100], h.fine_names[-1]]
    for k, wnid in enumerate(chosen):
        (tmp_path / wnid).mkdir()
        for j in range(2):
            pixels = np.full((300, 400, 3), 40 * k + j, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / wnid / f"ILSVRC2012_val_{k}{j}.JPEG")
    (tmp_path / "n99999999").mkdir()  # not in the hierarchy: ignored
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "n99999999" / "a.JPEG")

    ds = imagenet(tmp_path)
    assert len(ds) == 6 and ds.skipped == ["n99999999"]
    labels = sorted({ds[i][1] for i in range(6)})
    assert labels == sorted(h.fine_names.index(w) for w in chosen)
    image, _label = ds[0]
    assert image.shape == (3, 224, 224) and image.min() >= 0 and image.max() <= 1


def test_imagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imagenet(tmp_path / "nope")
    (tmp_path / "cats").mkdir()
    with pytest.raises(FileNotFoundError, match="no folder of a fine class of the hierarchy"):
        imagenet(tmp_path)


def test_get_dataset_by_name(tmp_path):
    ds = get_dataset("shapes", "test", n=10)
    assert len(ds) == 10 and ds.hierarchy == SHAPES_HIERARCHY
    _write_cifar10(tmp_path)
    sub = get_dataset("cifar10", "test", n=5, root=tmp_path)
    assert len(sub) == 5 and sub.hierarchy == CIFAR10_HIERARCHY
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match="needs a root folder"):
        get_dataset("cifar100")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        get_dataset("shapes", n=0)


def test_shapes_size_limit_and_chunked_rendering(capsys):
    with pytest.raises(ValueError, match="beyond the limit of 100,000 shapes images"):
        ShapesC2F(SHAPES_MAX_IMAGES + 1)
    ds = ShapesC2F(6, seed=2)
    x, y, masks = ds.tensors(progress=True)
    assert "rendering shapes" in capsys.readouterr().err
    chunk = ds.render(range(4, 8))  # beyond n: the same stream, for chunks of a larger set
    assert torch.equal(chunk[0][:2], x[4:]) and torch.equal(chunk[2][:2], masks[4:])
    assert chunk[1].tolist() == [4, 5, 6, 7] and torch.equal(ds.targets, y)


# ------------------------------------------------------------------ your own folders, subsets
def _image_folder(root, counts: dict[str, int], mode="RGB"):
    for k, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for j in range(count):
            pixels = np.full((40, 50, 3), 10 * k + j, dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{j:03d}.png")


def test_imagefolder_with_a_user_hierarchy(tmp_path):
    h = Hierarchy.from_dict({"round": ["ball", "coin"], "long": ["pen"]})
    _image_folder(tmp_path / "imgs", {"ball": 2, "pen": 3})
    path = h.to_json(tmp_path / "h.json")
    ds = get_dataset(f"imagefolder:{tmp_path / 'imgs'}", hierarchy=path)
    assert ds.hierarchy == h and len(ds) == 5
    assert sorted(ds.targets) == [0, 0, 2, 2, 2]  # global fine indices of ball, pen
    image, _ = ds[0]
    assert image.shape == (3, 224, 224)
    assert get_dataset(f"imagefolder:{tmp_path / 'imgs'}", hierarchy=h, size=32)[0][0].shape == (
        3, 32, 32)  # fmt: skip
    with pytest.raises(ValueError, match="needs a hierarchy whose fine classes are its folder"):
        get_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    (tmp_path / "imgs" / "pencil").mkdir()
    with pytest.raises(
        ValueError, match="1 folders .* not fine classes of the hierarchy: 'pencil'"
    ):
        get_dataset(f"imagefolder:{tmp_path / 'imgs'}", hierarchy=h)


def test_imagefolder_grayscale(tmp_path):
    h = Hierarchy.from_dict({"a": ["x"], "b": ["y"]})
    _image_folder(tmp_path, {"x": 1, "y": 1}, mode="L")
    from c2f_attacks.data import HierarchyFolder

    assert HierarchyFolder(tmp_path, h, size=16, mode="L")[0][0].shape == (1, 16, 16)


def test_subsets_are_even_across_classes_seeded_and_not_the_first_files(tmp_path):
    targets = [0] * 50 + [1] * 30 + [2] * 5 + [3] * 15
    picked = even_subset(targets, 12, seed=0)
    counts = np.bincount(np.asarray(targets)[picked], minlength=4)
    assert counts.tolist() == [3, 3, 3, 3]
    assert picked != list(range(12)) and picked == sorted(picked)
    assert even_subset(targets, 12, seed=0) == picked and even_subset(targets, 12, seed=1) != picked
    big = np.bincount(np.asarray(targets)[even_subset(targets, 40, seed=0)], minlength=4)
    assert big.tolist() == [12, 12, 5, 11] or big.tolist() == [12, 11, 5, 12]  # class 2 runs out
    assert sorted(even_subset(targets, 100)) == list(range(100))
    with pytest.raises(ValueError, match=r"n must be in 1..100"):
        even_subset(targets, 101)

    _image_folder(tmp_path, {"a": 6, "b": 2})
    h = Hierarchy.from_dict({"g": ["a", "b"]})
    sub = get_dataset(f"imagefolder:{tmp_path}", n=4, hierarchy=h)
    assert sorted(sub.dataset.targets[i] for i in sub.indices) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="n=9 is more than the 8 images of imagefolder"):
        get_dataset(f"imagefolder:{tmp_path}", n=9, hierarchy=h)


def test_dataset_hierarchy_must_match_the_given_one(tmp_path):
    _write_cifar10(tmp_path)
    swapped = Hierarchy.from_dict(dict(reversed(CIFAR10_HIERARCHY.to_dict().items())))
    with pytest.raises(ValueError, match="hierarchies of dataset 'cifar10' and the given"):
        get_dataset("cifar10", root=tmp_path, hierarchy=swapped)
    assert len(get_dataset("cifar10", root=tmp_path, hierarchy=CIFAR10_HIERARCHY)) == 20


def test_offline_photos():
    pytest.importorskip("skimage", reason="the photos ship with scikit-image (extra [photos])")
    x = load_photos(["chelsea", "grace_hopper"], size=64)
    assert x.shape == (2, 3, 64, 64) and x.min() >= 0 and x.max() <= 1
    with pytest.raises(ValueError, match="unknown photo 'lena'"):
        load_photos(["lena"])
