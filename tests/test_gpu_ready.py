"""GPU readiness without a GPU: the check script's no-CUDA exit, and each torchrun rank's GPU."""

import os
import subprocess
import sys
from pathlib import Path

from c2f_attacks.runner.distributed import local_device

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


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


def test_each_torchrun_rank_takes_its_own_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert local_device("cuda") == "cuda"  # one process: torch's current GPU
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == "cuda:3"
    assert local_device("cuda:1") == "cuda:1"  # an explicit GPU is kept
    assert local_device("cpu") == "cpu"
