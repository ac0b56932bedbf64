"""Benchmark harness conventions.

``pytest bench --benchmark``: full size, pytest-benchmark timing on, measured ratios written to
``results/bench_ratios.json``, one record per measurement and CPU model (``--ratios-out DIR``: to
``DIR/bench_ratios.json`` instead, with pytest-benchmark's JSON). Without ``--benchmark`` every
benchmark runs once at smoke size (pytest-benchmark disabled), so the suite doubles as a fast
integration test.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from c2f_attacks._io import atomic_write_text
from c2f_attacks.leaderboard.environment import cpu_name, git_commit

RESULTS = Path(__file__).resolve().parent.parent / "results"


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark", action="store_true", help="run the benchmarks at full size and time them"
    )
    parser.addoption(
        "--ratios-out", metavar="DIR", default=str(RESULTS),
        help="folder for bench_ratios.json and benchmark.json (default: results/)",
    )  # fmt: skip


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before pytest-benchmark builds its session, so that smoke runs call each function once and
    # full runs keep pytest-benchmark's JSON next to the leaderboard; and before pytest-xdist
    # starts its workers, so that full runs time in one process with every core.
    if not config.getoption("--benchmark"):
        config.option.benchmark_disable = True
        return
    config.option.numprocesses, config.option.dist, config.option.tx = 0, "no", []
    if getattr(config.option, "benchmark_json", None) is None:
        out = Path(config.getoption("--ratios-out"))
        out.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = str(out / "benchmark.json")


@pytest.fixture(scope="session")
def full_size(request) -> bool:
    """True under ``--benchmark``: full benchmark sizes, not the smoke sizes."""
    return bool(request.config.getoption("--benchmark"))


def flat_vgg16(full_size: bool) -> torch.nn.Module:
    """torchvision's VGG-16 (1000 classes) with random weights (no download: speed does not
    depend on them); at smoke size a VGG-16 with every width / 16."""
    import torchvision

    from c2f_attacks.models.vgg import vgg16_features

    torch.manual_seed(0)
    if full_size:
        return torchvision.models.vgg16(weights=None).eval()
    return torch.nn.Sequential(vgg16_features(width=1 / 16), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(32, 1000)).eval()  # fmt: skip


class CoarseLogits(torch.nn.Module):
    """The coarse stage as a flat classifier, for torchattacks."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).coarse_logits


def forward_backward(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One forward and the input gradient of the target logits: the cost an LRP pass is
    compared with."""
    xg = x.detach().requires_grad_()
    out = model(xg)
    return torch.autograd.grad(out.gather(1, target[:, None]).sum(), xg)[0]


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (CUDA synchronized when available)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_rounds(
    fns: list[Callable[[], object]], repeats: int, warmup: int = 1
) -> list[list[float]]:
    """Wall times of each function in each of ``repeats`` rounds (after ``warmup`` rounds), timed
    round-robin, so that load from other processes on a shared machine hits all of them alike
    and the functions' times in one round can be compared."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(warmup + repeats):
        for fn, ts in zip(fns, times):
            ts.append(median_time(fn, repeats=1, warmup=0))
    return [ts[warmup:] for ts in times]


def interleaved_medians(
    fns: list[Callable[[], object]], repeats: int, warmup: int = 1
) -> list[float]:
    """Median wall time of each function over :func:`interleaved_rounds`."""
    return [statistics.median(ts) for ts in interleaved_rounds(fns, repeats, warmup)]


@pytest.fixture
def record_ratio(full_size, request):
    """``record_ratio(name, value, goal=..., device=None, **details)``: keep a ratio measured in
    one run.

    Under ``--benchmark`` it is upserted into ``bench_ratios.json`` (results/, or
    ``--ratios-out``) as ``{name: {cpu: record}}``: one record per measurement and CPU model, so
    that a goal set for several CPUs keeps each one's latest figure. The record holds the value,
    the goal, ``device`` (where the timed work ran; default: the GPU when there is one, else
    "cpu"), the CPU's logical cores, torch's thread count and version, and the commit measured.
    At smoke size nothing is written (smoke numbers are not measurements).
    """

    def record(name: str, value: float, goal: str, device: str | None = None, **details):
        if not full_size:
            return
        path = Path(request.config.getoption("--ratios-out")) / "bench_ratios.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        if device is None:
            device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        cpu = cpu_name()
        data.setdefault(name, {})[cpu] = {
            "value": round(float(value), 4),
            "goal": goal,
            "device": device,
            "cpu": cpu,
            "cpu_cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "commit": git_commit(),
            **details,
        }
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    return record
