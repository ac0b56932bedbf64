"""Images per second of the fooling-ratio evaluation in PyTorch, per device and precision.

    python scripts/eval_throughput.py --out /tmp/throughput                  # CPU only
    python scripts/eval_throughput.py --out results/throughput --devices cpu cuda   # with a GPU

The evaluation is what every leaderboard row pays after its attack: the coarse and fine
predictions of the clean and of the adversarial batch (two forward passes per image). For each
model, device and precision (fp32; on CUDA also fp16 weights and bf16 autocast) it times
``--repeats`` passes over ``--n`` shapes test images in batches of ``--batch-size`` after one
warm-up pass, and reports the median images/s and the agreement of the predictions with fp32 on
the same device. All rows are measured in one process, so their ratios are comparable; the
absolute numbers depend on the machine (named in the output). ONNX Runtime's speeds are measured
by ``pytest bench --benchmark``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write_text
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.models import load_model

PRECISIONS = {"cpu": ("fp32",), "cuda": ("fp32", "fp16", "bf16")}


def _predict(model, x: torch.Tensor, precision: str) -> torch.Tensor:
    """(B, 2) coarse and fine predictions of ``x`` at ``precision``."""
    if precision == "fp16":
        x = x.half()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        out = model(x)
        return torch.stack([out.coarse_pred, out.fine_pred], dim=1)


def measure(model_name: str, device: str, precision: str, x, x_adv, args) -> dict:
    """Median images/s of clean+adversarial predictions, and their agreement with fp32."""
    model = load_model(model_name, map_location=device)
    if precision == "fp16":
        model = model.half()
    batches = [(x[b : b + args.batch_size].to(device), x_adv[b : b + args.batch_size].to(device))
               for b in range(0, len(x), args.batch_size)]  # fmt: skip

    def one_pass() -> list[torch.Tensor]:
        preds = [torch.cat([_predict(model, c, precision), _predict(model, a, precision)])
                 for c, a in batches]  # fmt: skip
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return preds

    preds = one_pass()  # warm-up: kernel choice and allocator
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        one_pass()
        seconds.append(time.perf_counter() - start)
    return {"model": model_name, "device": device, "precision": precision,
            "batch_size": args.batch_size, "n": len(x),
            "images_per_s": 2 * len(x) / statistics.median(seconds),
            "predictions": torch.cat(preds).cpu()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for throughput.{json,md}")
    p.add_argument("--models", nargs="+", default=["shapes-vgg16", "shapes-vgg16-at"])
    p.add_argument("--devices", nargs="+", default=["cpu"])
    p.add_argument("-n", "--num-images", dest="n", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    for device in args.devices:
        kind = device.split(":")[0]
        if kind not in PRECISIONS:
            p.error(f"unknown device {device!r}; use cpu or cuda[:N]")
        if kind == "cuda" and not torch.cuda.is_available():
            p.error(f"--devices names {device} but torch sees no CUDA device")
    torch.manual_seed(0)
    x, _, _ = ShapesC2F(args.n, SHAPES_SPLITS["test"]).tensors()
    # a stand-in adversarial batch: the evaluation's cost does not depend on the perturbation
    x_adv = (x + (8 / 255) * torch.randn_like(x).sign()).clamp(0, 1)
    rows = []
    for model_name in args.models:
        reference = {}
        for device in args.devices:
            for precision in PRECISIONS[device.split(":")[0]]:
                row = measure(model_name, device, precision, x, x_adv, args)
                preds = row.pop("predictions")
                reference.setdefault(device, preds)
                row["agreement_with_fp32"] = float((preds == reference[device]).all(1).float()
                                                   .mean())  # fmt: skip
                rows.append(row)
                print(f"{model_name} {device} {precision}: {row['images_per_s']:.0f} img/s, "
                      f"agreement {row['agreement_with_fp32']:.4f}", flush=True)  # fmt: skip
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "gpu": gpu}  # fmt: skip
    command = " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Evaluation throughput (PyTorch eager)", "",
             f"`python scripts/eval_throughput.py {command}`", "", f"Machine: {machine}.", "",
             "| model | device | precision | images/s | agreement with fp32 |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['model']} | {r['device']} | {r['precision']} | {r['images_per_s']:.0f} | "
              f"{r['agreement_with_fp32']:.4f} |" for r in rows]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "throughput.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out / "throughput.json",
                      json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out / 'throughput.md'} and {args.out / 'throughput.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
