"""GPU readiness in one command: 224-px attacks (FP32, bf16, AMP), LRP, evaluation through
PyTorch and onnxruntime (TensorRT / CUDA providers), and torchrun over the GPUs.

    python scripts/gpu_check.py                       # writes results/gpu/*.json
    python scripts/gpu_check.py --out /tmp/gpu --budget-s 300

Every check runs in its own ``try`` and writes ``<out>/<check>.json`` whatever happens::

    {"check", "status": "ok" | "failed" | "skipped", "seconds", "device", "versions",
     "ran": what ran (models, sizes, settings), "figures": the measurements, "error"}

The checks, in order (a check that would start after the time budget is recorded as skipped;
one still running at the budget's end is stopped and recorded as failed):

1. ``environment``: GPUs, memory, the host CPU, CUDA/cuDNN and package versions, onnxruntime's
   providers.
2. ``attacks_fp32``: PGD-10, LRPC and LRPF (their defaults, l-inf budget 8/255) at 224 px on
   EfficientNet-Lite0 (real ImageNet weights) and VGG-16 (``imagenet-vgg16`` when its weights
   are in the torch cache, else the same architecture with random weights): images/s, fooling
   ratio, the largest l-inf.
3. ``attacks_bf16``: the same with model and images in bfloat16; success agreement with FP32.
4. ``attacks_amp``: the same under ``torch.autocast(bfloat16)`` with the FP32 model.
5. ``lrp``: LRP / (forward + input-gradient backward) on VGG-16 at 224 px, and the relative
   difference of the GPU relevance from the CPU one.
6. ``eval_torch``: clean + adversarial predictions per second (the evaluation a leaderboard row
   pays), FP32 and bf16 autocast, with agreement.
7. ``eval_onnxruntime``: the exported graph on TensorRT and on CUDA (each asked for alone, so a
   provider that does not load is an error, never a silent CPU run): images/s, agreement with
   PyTorch. Skipped when onnxruntime is not installed.
8. ``torchrun``: ``c2f-bench run`` on the photos (image folder) in one process and under
   ``torchrun --nproc-per-node <GPUs>``: the rows must be equal.

Images: the offline photos (:mod:`c2f_attacks.data.photos`) at 224 px, tiled to the batch size
(``--batch``, default 32; the evaluations take 8 batches).
Without CUDA the script prints one line and exits with status 2, writing nothing.

``--device cpu`` runs the same code on the CPU (onnxruntime on its CPU provider, torchrun over
two CPU ranks): a dry run that finds a broken check before a GPU's limited time is spent on it.
Its figures are not GPU figures, so it writes only where ``--out`` says::

    python scripts/gpu_check.py --device cpu --batch 2 --out /tmp/gpu-dry-run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
EPS = 8 / 255
CPU_RANKS = 2  # torchrun's ranks in a CPU dry run


class BudgetExceeded(Exception):
    """The global time budget ran out while a check was running."""


def _alarm(signum, frame):
    raise BudgetExceeded("the global time budget ran out during this check")


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found = {}
    for name in ("c2f-attacks", "torch", "torchvision", "timm", "onnxruntime-gpu", "onnxruntime",
                 "tensorrt", "onnx"):  # fmt: skip
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda
    found["cudnn"] = str(torch.backends.cudnn.version())
    found["python"] = platform.python_version()
    return found


class Context:
    """What the checks share: the device, the batch size, the photos, the models (loaded once),
    FP32 results to compare low precision with, a scratch folder."""

    def __init__(self, scratch: Path, device: torch.device, batch_size: int):
        from c2f_attacks.data import PHOTO_SYNSETS, PHOTOS, load_photos

        self.scratch, self.device, self.batch_size = scratch, device, batch_size
        self.eval_size = 8 * batch_size
        try:
            self.photo_names = list(PHOTOS)
            photos = load_photos(self.photo_names)
        except ImportError:  # scikit-image missing: matplotlib's photo alone
            self.photo_names = [n for n in PHOTOS if PHOTOS[n] == "matplotlib"]
            photos = load_photos(self.photo_names)
        self.labelled = [n for n in self.photo_names if n in PHOTO_SYNSETS]
        self.photos = photos
        self._models: dict[str, tuple[torch.nn.Module, str]] = {}
        self.fp32_success: dict[tuple[str, str], torch.Tensor] = {}

    def batch(self, n: int) -> torch.Tensor:
        reps = -(-n // len(self.photos))
        return self.photos.repeat(reps, 1, 1, 1)[:n].to(self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], object], repeats: int = 3) -> tuple[object, float]:
        """(result of a warm-up call, median seconds of ``repeats`` more calls)."""
        result = fn()
        self.sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return result, statistics.median(times)

    def autocast(self, enabled: bool = True) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def model(self, name: str) -> tuple[torch.nn.Module, str]:
        """(C2F model on the device in eval mode, description of its weights)."""
        if name not in self._models:
            from c2f_attacks.models import load_model

            if name == "efficientnet_lite0":
                model, weights = load_model("imagenet-efficientnet-lite0"), "ImageNet (real)"
            else:
                model, weights = _vgg16()
            self._models[name] = (model.to(self.device).eval(), weights)
        return self._models[name]


def _vgg16():
    from c2f_attacks.models import load_model
    from c2f_attacks.models.torchvision_vgg import (
        induced_torchvision_vgg16,
        torchvision_weights_cached,
    )

    if torchvision_weights_cached("vgg16", "IMAGENET1K_V1"):
        return load_model("imagenet-vgg16"), "ImageNet IMAGENET1K_V1 (real)"
    torch.manual_seed(0)
    return induced_torchvision_vgg16(weights=None), (
        "random (imagenet-vgg16's weights are not in the torch cache)"
    )


MODELS = ("efficientnet_lite0", "vgg16")


# ----------------------------------------------------------------------------- checks
def check_environment(ctx: Context) -> tuple[dict, dict]:
    from c2f_attacks.leaderboard.environment import cpu_name

    # the host CPU too: a GPU machine's CPU is a machine the CPU benchmarks may not have seen
    figures = {"cpu": cpu_name(), "cpu_cores": os.cpu_count(), "gpus": []}
    if ctx.device.type == "cuda":
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            figures["gpus"].append({
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
            })  # fmt: skip
        figures["bf16_supported"] = torch.cuda.is_bf16_supported()
    try:
        import onnxruntime as ort

        figures["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        figures["onnxruntime_providers"] = None
    return {"what": "device and library inventory"}, figures


def _attacks(model) -> dict:
    from c2f_attacks.attacks import LRPC, LRPF, PGD

    return {"pgd": PGD(model, eps=EPS, steps=10, random_start=False, stage="coarse"),
            "lrpc": LRPC(model, eps=EPS), "lrpf": LRPF(model, eps=EPS)}  # fmt: skip


def _attack_check(ctx: Context, precision: str) -> tuple[dict, dict]:
    figures = {}
    batch = ctx.batch_size
    ran = {"size": 224, "batch": batch, "eps": EPS, "precision": precision,
           "attacks": "PGD-10 (coarse, no random start), LRPC and LRPF at their defaults",
           "images": f"{len(ctx.photo_names)} photos tiled to the batch", "models": {}}  # fmt: skip
    for name in MODELS:
        model, weights = ctx.model(name)
        ran["models"][name] = weights
        x = ctx.batch(batch)
        if precision == "bf16":  # a copy: rounding the shared model's weights would be lossy
            model, x = copy.deepcopy(model).to(torch.bfloat16), x.to(torch.bfloat16)
        for label, attack in _attacks(model).items():

            def call(attack=attack, x=x):
                with ctx.autocast(enabled=precision == "amp"):
                    return attack(x)

            res, seconds = ctx.timed(call, repeats=2)
            linf = (res.x_adv.float() - x.float()).abs().flatten(1).amax(1)
            row = {"images_per_s": batch / seconds,
                   "fooling_ratio": res.success.float().mean().item(),
                   "linf_max": linf.max().item(),
                   "queries_per_image": res.queries.float().mean().item()}  # fmt: skip
            key = (name, label)
            if precision == "fp32":
                ctx.fp32_success[key] = res.success.cpu()
            elif key in ctx.fp32_success:
                agree = res.success.cpu() == ctx.fp32_success[key]
                row["success_agreement_with_fp32"] = agree.float().mean().item()
            figures[f"{name}/{label}"] = row
        del model
    return ran, figures


def check_attacks_fp32(ctx):
    return _attack_check(ctx, "fp32")


def check_attacks_bf16(ctx):
    return _attack_check(ctx, "bf16")


def check_attacks_amp(ctx):
    return _attack_check(ctx, "amp")


def check_lrp(ctx: Context) -> tuple[dict, dict]:
    from c2f_attacks.lrp import lrp

    model, weights = ctx.model("vgg16")
    flat = model.flat  # the ImageNet VGG-16 itself, normalization outside
    batch = ctx.batch_size
    x = ctx.batch(batch)
    target = torch.arange(batch, device=ctx.device) % 1000

    def forward_backward():
        xg = x.detach().requires_grad_()
        return torch.autograd.grad(flat(xg).gather(1, target[:, None]).sum(), xg)[0]

    _, t_fb = ctx.timed(forward_backward, repeats=5)
    relevance, t_lrp = ctx.timed(lambda: lrp(flat, x, target, check_range=False), 5)
    on_cpu = copy.deepcopy(flat).cpu()
    cpu = lrp(on_cpu, x[:2].cpu(), target[:2].cpu(), check_range=False)
    error = ((relevance[:2].cpu() - cpu).norm() / cpu.norm()).item()
    ran = {"model": f"VGG-16, weights {weights}", "size": 224, "batch": batch,
           "composite": "epsilon_plus_flat"}  # fmt: skip
    return ran, {"lrp_over_forward_backward": t_lrp / t_fb, "t_lrp_s": t_lrp, "t_fb_s": t_fb,
                 "relative_difference_gpu_vs_cpu": error}  # fmt: skip


def _predict(ctx: Context, model, x, autocast: bool) -> torch.Tensor:
    with torch.inference_mode(), ctx.autocast(enabled=autocast):
        out = model(x)
        return torch.stack([out.coarse_pred, out.fine_pred], 1)


def check_eval_torch(ctx: Context) -> tuple[dict, dict]:
    figures = {}
    x = ctx.batch(ctx.eval_size)
    x_adv = (x + EPS * torch.randn_like(x).sign()).clamp(0, 1)  # cost does not depend on it
    for name in MODELS:
        model, _ = ctx.model(name)
        reference = None
        for precision in ("fp32", "bf16_autocast"):
            amp = precision != "fp32"

            def both(model=model, amp=amp):
                return torch.cat([_predict(ctx, model, x, amp), _predict(ctx, model, x_adv, amp)])

            preds, seconds = ctx.timed(both, repeats=5)
            reference = preds if reference is None else reference
            figures[f"{name}/{precision}"] = {
                "images_per_s": 2 * ctx.eval_size / seconds,
                "agreement_with_fp32": (preds == reference).all(1).float().mean().item(),
            }
    return {
        "batch": ctx.eval_size,
        "size": 224,
        "models": list(MODELS),
        "what": "coarse and fine predictions of a clean and an adversarial batch",
    }, figures


def check_eval_onnxruntime(ctx: Context) -> tuple[dict, dict]:
    import onnxruntime  # noqa: F401  (ImportError: recorded as the reason)

    from c2f_attacks.exporters import OrtC2F, export_onnx
    from c2f_attacks.exporters.runtime import CPU, CUDA, TRT

    figures = {}
    ran = {"batch": ctx.batch_size, "images": ctx.eval_size, "size": 224, "graphs": {}}
    x = ctx.batch(ctx.eval_size)
    gpu = ctx.device.type == "cuda"
    for name, providers in (("efficientnet_lite0", (TRT, CUDA) if gpu else (CPU,)),
                            ("vgg16", (CUDA,) if gpu else (CPU,))):  # fmt: skip
        model, weights = ctx.model(name)
        path = export_onnx(model, ctx.scratch / f"{name}.onnx", input_size=224)
        ran["graphs"][name] = weights
        reference = _predict(ctx, model, x, False)
        for provider in providers:
            key = f"{name}/{provider}"
            try:
                session = OrtC2F(path, providers=[provider], batch_size=ctx.batch_size,
                                 trt_cache_dir=ctx.scratch / "trt")  # fmt: skip
                out, seconds = ctx.timed(lambda s=session: s(x), repeats=3)
                preds = torch.stack([out.coarse_pred, out.fine_pred], 1).to(reference.device)
                figures[key] = {"providers": session.providers,
                                "images_per_s": ctx.eval_size / seconds,
                                "agreement_with_torch": (preds == reference).all(1).float()
                                .mean().item()}  # fmt: skip
            except BudgetExceeded:
                raise
            except Exception as err:  # one provider failing must not hide the other
                figures[key] = {"error": f"{type(err).__name__}: {err}"[:2000]}
    if all("error" in v for v in figures.values()):
        raise RuntimeError(f"no onnxruntime provider ran: {json.dumps(figures)[:2000]}")
    return ran, figures


def check_torchrun(ctx: Context) -> tuple[dict, dict]:
    import pandas as pd

    from c2f_attacks.data import write_photo_folder

    folder = write_photo_folder(ctx.scratch / "photos", ctx.labelled)
    ranks = torch.cuda.device_count() if ctx.device.type == "cuda" else CPU_RANKS
    run = ["run", "--model", "imagenet-efficientnet-lite0", "--dataset", f"imagefolder:{folder}",
           "-n", str(len(ctx.labelled)), "--batch-size", "1", "--attacks", "fgsm", "lrpc",
           "--protocol", "fixed", "--masks", "lrp", "--set", "steps=20",
           "--device", ctx.device.type, "--no-figures", "--quiet", "--format", "csv"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    commands = {
        "one": [sys.executable, "-m", "c2f_attacks.cli", *run],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                     str(ranks), "-m", "c2f_attacks.cli", *run],
    }  # fmt: skip
    boards = {}
    for label, command in commands.items():
        out = ctx.scratch / f"torchrun-{label}"
        done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True,
                              text=True, cwd=REPO)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{label} run failed ({done.returncode}): {done.stderr[-2000:]}")
        boards[label] = pd.read_csv(out / "leaderboard.csv")
    volatile = ["ms_per_image", "images_per_s", "timestamp", "git_commit"]
    one, sharded = (b.drop(columns=volatile) for b in (boards["one"], boards["torchrun"]))
    equal = one.equals(sharded)
    if not equal:
        raise RuntimeError(f"the sharded rows differ from the single-process rows:\n"
                           f"{one.compare(sharded).to_string()[:2000]}")  # fmt: skip
    ran = {"command": "c2f-bench " + " ".join(run), "nproc_per_node": ranks,
           "note": "one GPU: torchrun runs a single rank" if ranks == 1 else ""}  # fmt: skip
    return ran, {"rows": len(one), "rows_equal": equal,
                 "images_per_s": {label: boards[label]["images_per_s"].tolist()
                                  for label in boards}}  # fmt: skip


CHECKS: tuple[tuple[str, Callable[[Context], tuple[dict, dict]]], ...] = (
    ("environment", check_environment),
    ("attacks_fp32", check_attacks_fp32),
    ("attacks_bf16", check_attacks_bf16),
    ("attacks_amp", check_attacks_amp),
    ("lrp", check_lrp),
    ("eval_torch", check_eval_torch),
    ("eval_onnxruntime", check_eval_onnxruntime),
    ("torchrun", check_torchrun),
)


def run_checks(
    out: Path,
    budget_s: float,
    only: list[str] | None = None,
    device: str = "cuda",
    batch_size: int = 32,
) -> list[dict]:
    from c2f_attacks._io import atomic_write_text
    from c2f_attacks.leaderboard.environment import device_name

    deadline = time.monotonic() + budget_s
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    common = {"device": device_name(device), "gpus": gpus, "versions": versions()}
    records = []
    previous_handler = signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        ctx = None
        for name, check in CHECKS:
            if only and name not in only:
                continue
            record = {"check": name, **common, "ran": {}, "figures": {}, "error": None}
            left = deadline - time.monotonic()
            start = time.perf_counter()
            if left < 5:
                record.update(status="skipped", error=f"time budget of {budget_s:.0f} s spent")
            else:
                signal.alarm(max(1, int(left)))
                try:
                    ctx = ctx or Context(Path(scratch), torch.device(device), batch_size)
                    record["ran"], record["figures"] = check(ctx)
                    record["status"] = "ok"
                except Exception as err:  # recorded; the next check runs
                    record["status"] = "failed"
                    record["error"] = f"{type(err).__name__}: {err}"[:4000]
                    record["traceback"] = traceback.format_exc()[-4000:]
                finally:
                    signal.alarm(0)
                    if device == "cuda":
                        torch.cuda.empty_cache()
            record["seconds"] = round(time.perf_counter() - start, 2)
            atomic_write_text(out / f"{name}.json",
                              json.dumps(record, indent=2, default=str) + "\n")  # fmt: skip
            print(
                f"{name}: {record['status']} ({record['seconds']:.1f} s)"
                + (f": {record['error'][:200]}" if record["error"] else ""),
                flush=True,
            )
            records.append(record)
    signal.signal(signal.SIGALRM, previous_handler)
    return records


def _refuse(problem: str) -> int:
    print(f"gpu_check: {problem}; nothing run, nothing written", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path,
                   help="folder for <check>.json (default on CUDA: results/gpu)")  # fmt: skip
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: a dry run of the same code, written only to --out")  # fmt: skip
    p.add_argument("--batch", type=int, default=32, help="attack batch size (default 32)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="global time budget in seconds (default 420: 7 minutes)")  # fmt: skip
    p.add_argument("--checks", nargs="+", choices=[name for name, _ in CHECKS],
                   help="run only these checks")  # fmt: skip
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        return _refuse("no CUDA device (torch.cuda.is_available() is False)")
    if args.device == "cpu" and args.out is None:
        return _refuse("--device cpu needs --out (results/gpu holds GPU figures only)")
    if args.batch < 1:
        return _refuse(f"--batch must be at least 1, not {args.batch}")
    out = args.out or REPO / "results" / "gpu"
    records = run_checks(out, args.budget_s, args.checks, args.device, args.batch)
    failed = [r["check"] for r in records if r["status"] != "ok"]
    print(
        f"wrote {len(records)} files to {out}; "
        + (f"not ok: {', '.join(failed)}" if failed else "all ok")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
