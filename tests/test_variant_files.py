"""Deployment variants built from a dataset and reused from their files."""

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import c2f_attacks.exporters.variant_files as variant_files
from c2f_attacks import Hierarchy
from c2f_attacks.data import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.exporters.variant_files import cached_variants, split_images, variant_images
from c2f_attacks.models import load_model
from tests.conftest import TINY_HIERARCHY, tiny_vgg


def _int8_file(path, calibration_images: int) -> None:
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    proto = helper.make_model(graph)
    helper.set_model_props(proto, {"c2f.calibration_images": str(calibration_images)})
    onnx.save_model(proto, str(path))


@pytest.fixture
def built(monkeypatch):
    """The variants cached_variants asks to build (nothing is built)."""
    calls = []

    def write_variants(model, path, variants, dataset, **options):
        calls.append(list(variants))

    monkeypatch.setattr(variant_files, "write_variants", write_variants)
    return calls


def test_present_files_are_reused_and_int8_only_with_its_calibration(tmp_path, built):
    path = tmp_path / "abc.onnx"
    path.write_bytes(b"fp32")
    (tmp_path / "abc.fp16.onnx").write_bytes(b"fp16")
    _int8_file(tmp_path / "abc.int8.onnx", calibration_images=16)
    every = ["fp32", "fp16", "int8"]
    paths = cached_variants(None, path, every, "shapes", calibration_images=16)
    assert built == [] and paths == {
        "fp32": path, "fp16": tmp_path / "abc.fp16.onnx", "int8": tmp_path / "abc.int8.onnx"
    }  # fmt: skip
    cached_variants(None, path, every, "shapes", calibration_images=32)
    (tmp_path / "abc.fp16.onnx").unlink()
    cached_variants(None, path, ["fp16", "fp32"], "shapes", calibration_images=32)
    assert built == [["int8"], ["fp16"]]


def test_check_and_calibration_images_come_from_their_splits():
    model = load_model("shapes-vgg16")
    images, labels, calibration = variant_images(model, "shapes", check_images=6,
                                                 calibration_images=4)  # fmt: skip
    test = ShapesC2F(6, seed=SHAPES_SPLITS["test"]).tensors()
    assert torch.equal(images, test[0]) and torch.equal(labels, test[1])
    assert torch.equal(calibration, ShapesC2F(4, seed=SHAPES_SPLITS["train"]).tensors()[0])
    assert variant_images(model, "shapes", check_images=2)[2] is None


def test_a_dataset_of_another_hierarchy_is_refused():
    with pytest.raises(ValueError, match="hierarchies of the model and dataset 'shapes' differ"):
        split_images(tiny_vgg(Hierarchy.from_dict(TINY_HIERARCHY)), "shapes", "test", 2)
