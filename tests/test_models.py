import pytest
import torch
from torch import nn

from c2f_attacks.models import InducedC2F
from c2f_attacks.models.torchvision_vgg import induced_torchvision_vgg16
from tests.conftest import tiny_vgg


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
    assert out.coarse_logits.shape == (2, 11)


def test_torchvision_weights_errors_are_readable(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no weights 'NOT_A_WEIGHT' for vgg16"):
        induced_torchvision_vgg16("NOT_A_WEIGHT")
