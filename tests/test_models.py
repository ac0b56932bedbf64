import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

import c2f_attacks.models.efficientnet as efficientnet
from c2f_attacks import Hierarchy, load_model
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.models import InducedC2F
from c2f_attacks.models.torchvision_vgg import induced_torchvision_vgg16
from tests.conftest import TINY_HIERARCHY, tiny_vgg


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_c2f_vgg16_outputs(tiny_hierarchy, shared, batch_norm):
    model = tiny_vgg(tiny_hierarchy, shared_backbone=shared, batch_norm=batch_norm)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert n_convs == 13 * (1 if shared else 1 + tiny_hierarchy.num_coarse)
    out = model(torch.rand(5, 3, 32, 32))
    assert out.coarse_logits.shape == (5, 3) and out.fine_logits.shape == (5, 6)
    assert out.coarse_pred.shape == out.fine_pred.shape == (5,)


def test_fine_prediction_lies_inside_the_predicted_coarse_class(tiny_hierarchy):
    # Random weights and inputs give every combination of coarse/fine winners; the fine
    # prediction must always be the best fine class of the predicted coarse class.
    for seed in range(4):
        model = tiny_vgg(tiny_hierarchy, seed=seed)
        out = model(torch.rand(64, 3, 32, 32))
        assert (tiny_hierarchy.coarse_of(out.fine_pred) == out.coarse_pred).all()
        for i in range(64):
            group = list(tiny_hierarchy.fines_of(int(out.coarse_pred[i])))
            best = group[int(out.fine_logits[i, group].argmax())]
            assert out.fine_pred[i] == best


def test_induced_c2f_keeps_the_flat_ranking_inside_each_group(tiny_hierarchy):
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 9))
    class_index = [8, 0, 4, 2, 7, 5]  # fine class i is flat output class_index[i]
    model = InducedC2F(flat, tiny_hierarchy, class_index=class_index).eval()
    x = torch.rand(32, 3, 8, 8)
    flat_logits = flat(x)
    out = model(x)
    for c in range(tiny_hierarchy.num_coarse):
        group = list(tiny_hierarchy.fines_of(c))
        flat_cols = [class_index[g] for g in group]
        assert torch.equal(
            out.fine_logits[:, group].argsort(dim=1), flat_logits[:, flat_cols].argsort(dim=1)
        )
        torch.testing.assert_close(
            out.coarse_logits[:, c], flat_logits[:, flat_cols].logsumexp(dim=1)
        )
    assert (tiny_hierarchy.coarse_of(out.fine_pred) == out.coarse_pred).all()


def test_induced_c2f_validates_class_index(tiny_hierarchy):
    flat = nn.Linear(4, 9)
    with pytest.raises(ValueError, match="one flat index per fine class"):
        InducedC2F(flat, tiny_hierarchy, class_index=[0, 1])
    with pytest.raises(ValueError, match="same flat output"):
        InducedC2F(flat, tiny_hierarchy, class_index=[0, 0, 1, 2, 3, 4])


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.rand(3, 32, 32), ValueError, r"shape \(N, C, H, W\)"),
        (torch.rand(2, 1, 32, 32), ValueError, "3 channels"),
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), TypeError, "floating point"),
        (torch.rand(2, 3, 64, 64), ValueError, "32x32 pixels"),
        (torch.zeros(0, 3, 32, 32), ValueError, "empty batch"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_layout_is_rejected_by_forward(tiny_hierarchy, x, error, message):
    with pytest.raises(error, match=message):
        tiny_vgg(tiny_hierarchy)(x)


@pytest.mark.parametrize(
    "value, message", [(1.5, r"in \[0, 1\]"), (-0.1, r"in \[0, 1\]"), (float("nan"), "NaN"),
                       (float("inf"), "infinite")],
)  # fmt: skip
def test_predict_checks_pixel_range(tiny_hierarchy, value, message):
    x = torch.rand(2, 3, 32, 32)
    x[1, 0, 3, 3] = value
    with pytest.raises(ValueError, match=message):
        tiny_vgg(tiny_hierarchy).predict(x)


def test_torchvision_vgg16_by_weight_name_from_the_local_cache(tmp_path, monkeypatch):
    """The real torchvision loading path: weights by name, read from the hub cache."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = torchvision.models.vgg16()
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[1])

    model = induced_torchvision_vgg16("IMAGENET1K_V1").eval()
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    flat = reference.eval()((x - mean) / std)
    torch.testing.assert_close(out.fine_logits, flat[:, model.class_index])
    assert out.coarse_logits.shape == (2, imagenet_hierarchy().num_coarse)


def test_torchvision_weights_errors_are_readable(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no weights 'NOT_A_WEIGHT' for vgg16"):
        induced_torchvision_vgg16("NOT_A_WEIGHT")


def test_induced_c2f_with_the_identity_mapping_needs_exactly_k_outputs(tiny_hierarchy):
    model = InducedC2F(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 9)), tiny_hierarchy)
    with pytest.raises(ValueError, match="returned 9 logits per image, but the hierarchy has 6"):
        model(torch.rand(2, 3, 4, 4))


def test_induced_c2f_exports_through_torch_export(tiny_hierarchy, tmp_path):
    """The forward reads no value from a tensor: torch.export needs that (and on a GPU such a
    read would wait for the device on every forward)."""
    from c2f_attacks.exporters import OrtC2F, export_onnx

    torch.manual_seed(0)
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 9))  # fmt: skip
    model = InducedC2F(flat, tiny_hierarchy, class_index=[8, 0, 4, 2, 7, 5], input_size=8).eval()
    path = export_onnx(model, tmp_path / "induced.onnx", dynamo=True)  # no TorchScript fallback
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(OrtC2F(path)(x).fine_logits, model(x).fine_logits)
    narrow = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8))  # output 8 is missing
    with pytest.raises(ValueError, match=r"\(2, 8\), but the hierarchy needs output index 8"):
        InducedC2F(narrow, tiny_hierarchy, class_index=[8, 0, 4, 2, 7, 5])(x[:2])


def test_grayscale_models_take_one_channel(tiny_hierarchy):
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 6))  # fmt: skip
    model = InducedC2F(flat, tiny_hierarchy).eval()
    assert model.in_channels == 1
    assert model.predict(torch.rand(2, 1, 8, 8)).fine_logits.shape == (2, 6)
    with pytest.raises(ValueError, match="must have 1 channels"):
        model(torch.rand(2, 3, 8, 8))
    normalized = InducedC2F(flat, tiny_hierarchy, mean=(0.5,), std=(0.25,))
    assert normalized.in_channels == 1


# ------------------------------------------------------------------ your own model: module:factory
USER_MODULE = """
import torch
from torch import nn
from c2f_attacks import Hierarchy
from tests.conftest import TINY_HIERARCHY, tiny_vgg

def c2f():
    return tiny_vgg(Hierarchy.from_dict(TINY_HIERARCHY))

def flat():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))

def named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 7))
    model.class_names = ["bus", "x", "tree", "cat", "car", "cow", "dog"]
    return model

def broken():
    model = flat()
    model[1].weight.data[0, 0] = float("nan")
    return model

not_callable = 3

def a_string():
    return "vgg"
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models"


def test_factory_returning_a_c2f_model(user_module, tiny_hierarchy):
    model = load_model(f"{user_module}:c2f")
    assert model.hierarchy == tiny_hierarchy and not model.training
    other = Hierarchy.from_dict({"animal": ["cat", "dog", "cow"], "vehicle": ["car", "bus"]})
    with pytest.raises(ValueError, match="fine classes only in model 'my_models:c2f': 'tree'"):
        load_model(f"{user_module}:c2f", hierarchy=other)


def test_factory_returning_a_flat_model_with_a_hierarchy_file(user_module, tmp_path):
    path = Hierarchy.from_dict(TINY_HIERARCHY).to_json(tmp_path / "h.json")
    model = load_model(f"{user_module}:flat", hierarchy=path)
    assert isinstance(model, InducedC2F)
    x = torch.rand(3, 3, 8, 8)
    flat = model.flat(x)
    torch.testing.assert_close(model(x).fine_logits, flat)  # output i is fine class i


def test_factory_flat_model_outputs_matched_by_class_names(user_module, tiny_hierarchy):
    model = load_model(f"{user_module}:named", hierarchy=tiny_hierarchy)
    x = torch.rand(2, 3, 8, 8)
    flat = model.flat(x)
    names = model.flat.class_names
    expected = flat[:, [names.index(f) for f in tiny_hierarchy.fine_names]]
    torch.testing.assert_close(model(x).fine_logits, expected)
    short = Hierarchy.from_dict({"a": ["cat", "lion"]})
    with pytest.raises(ValueError, match="1 fine classes of the hierarchy are not in the model's"):
        load_model(f"{user_module}:named", hierarchy=short)


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("my_models:flat", ValueError, "flat classifier .*give the hierarchy"),
        ("my_models:missing", UserError, "module 'my_models' has no attribute 'missing'"),
        ("my_models:not_callable", UserError, "non-callable 'not_callable'"),
        ("my_models:a_string", UserError, "factory returned a str"),
        ("no_such_package.models:build", ValueError, "cannot import module 'no_such_package"),
        ("my_models:broken", ValueError, "weight 'flat.1.weight' has 1 NaN or infinite values"),
    ],
)
def test_factory_errors(user_module, tiny_hierarchy, spec, error, message):
    hierarchy = tiny_hierarchy if spec.endswith("broken") else None
    with pytest.raises(error, match=message):
        load_model(spec, hierarchy=hierarchy)


def test_missing_imagenet_extra_names_the_pip_command(monkeypatch):
    real_import = efficientnet.importlib.import_module

    def no_timm(name, *args):
        if name == "timm":
            raise ModuleNotFoundError("No module named 'timm'")
        return real_import(name, *args)

    monkeypatch.setattr(efficientnet.importlib, "import_module", no_timm)
    with pytest.raises(ImportError, match=r"pip install 'c2f-attacks\[imagenet\]'"):
        load_model("imagenet-efficientnet-lite0")


def test_lukemelas_key_mapping_is_positional_by_stage():
    w = torch.zeros(1)
    state = {"_conv_stem.weight": w, "_bn0.num_batches_tracked": w,
             "_blocks.0._depthwise_conv.weight": w, "_blocks.1._expand_conv.weight": w,
             "_blocks.2._project_conv.weight": w, "_blocks.3._bn2.bias": w,
             "_fc.bias": w}  # fmt: skip
    mapped = efficientnet.lukemelas_to_timm(state, depths=[1, 2, 1])
    assert sorted(mapped) == sorted(["conv_stem.weight", "blocks.0.0.conv_dw.weight",
                                     "blocks.1.0.conv_pw.weight", "blocks.1.1.conv_pwl.weight",
                                     "blocks.2.0.bn3.bias", "classifier.bias"])  # fmt: skip
    with pytest.raises(ValueError, match="unexpected key '_head.weight'"):
        efficientnet.lukemelas_to_timm({"_head.weight": w}, depths=[1])


def test_the_documented_own_model_example_runs(capsys):
    example = Path(__file__).parents[1] / "examples" / "own_model.py"
    runpy.run_path(str(example))["main"](steps=2, size=32, n=2)
    out = capsys.readouterr().out
    assert out.count("image ") == 2 and "fooling ratio" in out
