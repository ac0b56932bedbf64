"""Pre-flight: every check fails before the first attack, with the user's input named."""

import pytest
import torch

from c2f_attacks.data import get_dataset
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models import load_model
from c2f_attacks.models.checks import check_finite
from c2f_attacks.runner import MAX_IMAGES, RunConfig, preflight, run
from c2f_attacks.runner.preflight import COMMITTED_RESULTS


def test_out_dir_refuses_the_committed_results_unless_allowed(tmp_path):
    repo_results = COMMITTED_RESULTS[0]
    for bad in (repo_results, repo_results / "figures"):
        with pytest.raises(ValueError, match="committed results folder"):
            preflight.check_out_dir(bad)
    with pytest.raises(ValueError, match="empty path"):
        preflight.check_out_dir("")
    with pytest.raises(ValueError, match="inside the installed package"):
        preflight.check_out_dir(COMMITTED_RESULTS[1].parent / "checkpoints")
    assert preflight.check_out_dir(tmp_path / "new") == (tmp_path / "new").resolve()
    assert (tmp_path / "new").is_dir()


def test_out_dir_allowed_results_is_accepted_without_writing(monkeypatch, tmp_path):
    # --allow-results-dir only lifts the refusal; the writability check still runs there.
    checked = []
    monkeypatch.setattr(preflight, "check_writable", lambda folder, what: checked.append(folder))
    preflight.check_out_dir(COMMITTED_RESULTS[0], allow_results_dir=True)
    assert checked == [COMMITTED_RESULTS[0]]


def test_unwritable_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=r"output folder .*file/sub is not writable"):
        preflight.check_out_dir(blocker / "sub")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_one_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        preflight.check_device("cuda")


@pytest.mark.parametrize("device, message", [("tpu", "unknown device"), ("meta", "not supported")])
def test_unknown_devices(device, message):
    with pytest.raises(ValueError, match=message):
        preflight.check_device(device)


def test_num_images_limits():
    with pytest.raises(ValueError, match=f"beyond the limit of {MAX_IMAGES:,}"):
        preflight.check_num_images(MAX_IMAGES + 1, None, "shapes", "test")
    with pytest.raises(ValueError, match="more than the 3 images of cifar10/test"):
        preflight.check_num_images(5, [0, 1, 2], "cifar10", "test")
    preflight.check_num_images(3, [0, 1, 2], "cifar10", "test")


def test_non_finite_weights_are_named():
    model = load_model("shapes-vgg16")
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=f"mine.pt: weight '{name}' has 1 NaN"):
        check_finite(model, "mine.pt")


def test_hierarchy_differences_are_named():
    a = Hierarchy.from_dict({"animal": ["cat", "dog"], "vehicle": ["car"]})
    b = Hierarchy.from_dict({"animal": ["cat", "dog"], "plant": ["car"]})
    preflight.check_hierarchy(a, a, "m.pt", "shapes")
    with pytest.raises(
        ValueError,
        match="model 'm.pt' and dataset 'imagefolder:x' differ: "
        "coarse classes only in model 'm.pt': 'vehicle'",
    ):
        preflight.check_hierarchy(a, b, "m.pt", "imagefolder:x")


@pytest.fixture
def attacked(monkeypatch) -> list:
    """Replaces the attack loop: the list gets an entry if a run reaches its first attack."""
    calls = []
    monkeypatch.setattr("c2f_attacks.runner.execute._attack_all",
                        lambda *a, **k: calls.append(1))  # fmt: skip
    return calls


@pytest.mark.parametrize(
    "content",
    [b"model,dataset\nshapes\n", b"\xef\xbb\xbfnot;a;leaderboard\n1;2;3\n", b"\xff\xfe\x00"],
)
def test_a_bad_leaderboard_stops_the_run_before_any_attack(tmp_path, attacked, content):
    (tmp_path / "leaderboard.csv").write_bytes(content)
    with pytest.raises(ValueError, match="leaderboard"):
        run(RunConfig(n=2, out=str(tmp_path), progress=False))
    assert not attacked
    assert (tmp_path / "leaderboard.csv").read_bytes() == content
    assert not (tmp_path / "records").exists()


def test_mismatched_hierarchy_stops_the_run_before_any_attack(tmp_path, monkeypatch, attacked):
    other = Hierarchy.from_dict({"a": ["x", "y"], "b": ["z"]})
    dataset = get_dataset("shapes", "test", n=2)
    monkeypatch.setattr(type(dataset), "hierarchy", other)
    with pytest.raises(ValueError, match="model 'shapes-vgg16' and dataset 'shapes' differ"):
        run(RunConfig(n=2, out=str(tmp_path), progress=False))
    assert not attacked
