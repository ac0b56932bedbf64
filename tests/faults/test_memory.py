"""Memory is flat in the number of images: every pass over the images runs in batches (figures
included), nothing per image stays in memory (results stream to disk), no explanation leaves its
tensors in a reference cycle, a ``c2f-bench`` process evicts no compiled kernel, and the peak RSS
of a real run barely moves between two sizes."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from c2f_attacks.runner.memory import ONEDNN_DEFAULT_CACHE

from .conftest import run_args, run_in_process

BATCH = 2


@pytest.fixture
def largest_batch():
    """The largest batch any torch module of this process sees while the fixture is active."""
    seen = [0]

    def record(module, args):
        sizes = [a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2]
        seen[0] = max([seen[0], *sizes])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    yield seen
    handle.remove()


def test_every_model_pass_runs_in_batches_figures_included(tmp_path, largest_batch):
    """8 images in batches of 2: a whole-set pass shows as a batch of 8 (the figure step used
    to run the model on all images at once). Twice the batch size is allowed (clean and
    adversarial images explained together)."""
    n = 4 * BATCH
    args = run_args(tmp_path, "--num-images", str(n), "--batch-size", str(BATCH), figures=True)
    assert run_in_process(args) == 0
    assert 0 < largest_batch[0] <= 2 * BATCH


def test_an_explanation_leaves_nothing_in_a_reference_cycle():
    """A cycle is freed only by the garbage collector's rare full passes: an explanation's
    tensors caught in one piled up over a run's batches (hundreds of MB). Its autograd nodes
    hold their saved tensors outside Python's sight, so no object of the pass may be garbage:
    neither a tensor, nor an autograd node, nor the engine's own bookkeeping."""
    from c2f_attacks.lrp import stage_relevance
    from c2f_attacks.models import load_model

    model = load_model("shapes-vgg16")
    x = torch.rand(2, 3, 32, 32)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for create_graph in (False, True):
            stage_relevance(model, x, "coarse", create_graph=create_graph)
        gc.collect()
        cyclic = [
            type(o).__name__ for o in gc.garbage
            if isinstance(o, (torch.Tensor, torch.autograd.function.BackwardCFunction))
            or type(o).__module__.startswith("c2f_attacks")
        ]  # fmt: skip
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []


#: sizes of the RSS comparison (one batch; ten batches), the batch size, and the allowed growth
#: of the peak: a tenth of the small run's peak. With the old leak (explanation tensors kept in
#: reference cycles, per-image results in memory) the peak grew by 39% from 64 to 512 images.
RSS_SIZES, RSS_BATCH, RSS_MARGIN = (32, 320), 32, 1.1


def _start_run(tmp_path, n: int) -> tuple[subprocess.Popen, Path]:
    """``c2f-bench run`` on ``n`` images as a child process; (process, its stderr file)."""
    args = run_args(tmp_path / f"n{n}", "--num-images", str(n), "--batch-size", str(RSS_BATCH))
    err = tmp_path / f"stderr-{n}.txt"
    with open(err, "w") as stderr:
        command = [sys.executable, "-m", "c2f_attacks.cli", *args]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr), err


def _peak_rss_mb(proc: subprocess.Popen, err: Path) -> float:
    """Peak resident memory (MB) of the child ``proc``, measured by the kernel for that child
    alone (wait4's rusage)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    assert proc.returncode == 0, err.read_text()
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # KiB on Linux, bytes on macOS
    return usage.ru_maxrss / scale


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 (POSIX)")
def test_peak_rss_is_flat_in_n(tmp_path, record_property):
    # Both runs at once (each is a cold interpreter): the kernel counts each child's own peak.
    runs = [_start_run(tmp_path, n) for n in RSS_SIZES]
    try:
        small, large = (_peak_rss_mb(*run) for run in runs)
    finally:
        for proc, _ in runs:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    record_property("peak_rss_mb", {RSS_SIZES[0]: round(small), RSS_SIZES[1]: round(large)})
    print(f"peak RSS: n={RSS_SIZES[0]}: {small:.0f} MB, n={RSS_SIZES[1]}: {large:.0f} MB")
    assert large <= RSS_MARGIN * small


#: a child that starts the CLI, then runs one convolution on more batch shapes than oneDNN's
#: default cache holds and the first shape again (from 2 images: PyTorch runs a convolution this
#: small on one image without oneDNN); oneDNN reports each kernel it creates
_KERNELS_CHILD = """
import torch
from torch.nn import functional as F
from c2f_attacks.cli import main
from c2f_attacks.runner.memory import ONEDNN_DEFAULT_CACHE
main(["attacks", "fgsm"])
weight = torch.ones(1, 1, 3, 3)
for n in [*range(2, ONEDNN_DEFAULT_CACHE + 66), 2]:
    F.conv2d(torch.ones(n, 1, 3, 3), weight)
"""


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs PyTorch with oneDNN")
def test_a_cli_process_compiles_each_kernel_once():
    """Sub-batches of every size make more kernels than oneDNN keeps by default; evicting and
    compiling them again, batch after batch, fragmented the heap (runner/memory.py)."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    env["ONEDNN_VERBOSE"] = "profile_create"
    done = subprocess.run([sys.executable, "-c", _KERNELS_CHILD], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    created = [line for line in done.stdout.splitlines() if ",convolution," in line]
    assert len(created) > ONEDNN_DEFAULT_CACHE, "oneDNN reported too few kernels: not its path?"
    # a kernel line ends with its problem ("mb2_ic1oc1_...") and the milliseconds it took
    first = [line for line in created if line.split(",")[-2].startswith("mb2_")]
    assert [line.split(",")[3] for line in first] == ["create:cache_miss", "create:cache_hit"]
