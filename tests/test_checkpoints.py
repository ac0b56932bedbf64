import pytest
import torch

from c2f_attacks import load_model
from c2f_attacks.models import CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import tiny_vgg


@pytest.fixture
def model(tiny_hierarchy):
    return tiny_vgg(tiny_hierarchy, batch_norm=True)


def test_round_trip_restores_architecture_hierarchy_and_weights(tmp_path, model):
    path = save_checkpoint(model, tmp_path / "m.pt", meta={"note": "x"})
    loaded = load_model(path)
    assert loaded.hierarchy == model.hierarchy and loaded.cfg == model.cfg
    assert loaded.checkpoint_meta == {"note": "x"}
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x).fine_logits, model(x).fine_logits, rtol=0, atol=0)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, model):
    path = save_checkpoint(model, tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.pt cannot be read"):
        load_model(path)


def test_foreign_files(tmp_path, model):
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="plain.pt is not a c2f-attacks checkpoint"):
        load_model(plain)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt cannot be read"):
        load_model(text)


def test_tampered_fields(tmp_path, model):
    path = save_checkpoint(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("coarse_head.0.weight")
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="missing \\['coarse_head.0.weight'\\]"):
        load_model(path)
    payload["arch"] = "resnet"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="unknown arch 'resnet'"):
        load_model(path)
    payload["arch"], payload["hierarchy"] = "c2f_vgg16", {"a": []}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="'a' has no fine classes"):
        load_model(path)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'vgg99'.*shapes-vgg16"):
        load_model("vgg99")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, model, value):
    path = save_checkpoint(model, tmp_path / "diverged.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["fine_heads.1.6.bias"][0] = value
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match="diverged.pt: weight 'fine_heads.1.6.bias' has 1 NaN"
    ):
        load_model(path)
