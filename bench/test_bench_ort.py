"""Evaluation throughput on the CPU: onnxruntime FP32 / FP16 / INT8 sessions vs PyTorch eager.

The shipped C2F model, batch 256, every backend returning logits and predictions, all four
measured in one run, interleaved round by round (load from other processes on a shared machine
hits all of them alike) and on the same number of CPU threads. Goals: ORT FP32 >= 1.5x PyTorch
eager; ORT INT8 >= 1.5x ORT FP32. FP16 has no goal: the CPU provider has few float16 kernels and
runs most operators through casts to float32, so its speed is reported, not targeted. Numbers
from a shared machine are noisy; the 1-thread ratios are the more robust ones.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from bench.conftest import interleaved_medians
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.exporters import CALIBRATION_IMAGES, OrtC2F, export_variants
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig
from c2f_attacks.models.zoo import load_model, shipped_checkpoint

BACKENDS = ("torch", "fp32", "fp16", "int8")


def _shipped_model() -> tuple[torch.nn.Module, str]:
    if shipped_checkpoint("shapes-vgg16").is_file():
        return load_model("shapes-vgg16"), "shapes-vgg16"
    # Same architecture with untrained weights: throughput does not depend on the weights.
    cfg = VGGConfig(width=0.25, input_size=32, batch_norm=True, head_width=256,
                    mean=(0.5,) * 3, std=(0.25,) * 3)  # fmt: skip
    return C2FVGG16(ShapesC2F.hierarchy, cfg).eval(), "shapes-vgg16 architecture (untrained)"


@pytest.fixture(scope="module")
def setup(full_size, tmp_path_factory):
    """The model, the test batch and the three exported variants (checked on the batch)."""
    batch = 256 if full_size else 8
    model, name = _shipped_model()
    x, y, _ = ShapesC2F(batch, seed=SHAPES_SPLITS["test"]).tensors()
    calibration = ShapesC2F(CALIBRATION_IMAGES if full_size else 32, seed=SHAPES_SPLITS["train"])
    reports = export_variants(
        model, tmp_path_factory.mktemp("ort") / "model.onnx", calibration.tensors()[0], x, y,
        min_agreement=0.0,  # speed is measured here; agreement is reported, tests/ assert it
    )  # fmt: skip
    return model, name, x, {r.variant: r for r in reports}


@pytest.mark.parametrize("threads", [1, None], ids=["1-thread", "all-threads"])
def test_ort_variants_vs_torch_eager(threads, setup, full_size, record_ratio, benchmark):
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    try:
        _measure(threads, setup, full_size, record_ratio, benchmark)
    finally:
        torch.set_num_threads(default_threads)


def _measure(threads, setup, full_size, record_ratio, benchmark):
    model, model_name, x, reports = setup
    repeats = 15 if full_size else 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # same CPU budget as PyTorch
    sessions = {
        v: OrtC2F(r.path, ["CPUExecutionProvider"], batch_size=len(x), session_options=options)
        for v, r in reports.items()
    }

    def torch_eval():
        with torch.inference_mode():
            return model(x)

    calls = [torch_eval, *(lambda s=s: s(x) for s in sessions.values())]
    times = dict(zip(BACKENDS, interleaved_medians(calls, repeats, warmup=1)))
    benchmark.pedantic(sessions["int8"], args=(x,), rounds=repeats, iterations=1)
    speed = {b: len(x) / t for b, t in times.items()}
    print(
        f"\nbatch {len(x)}, {torch.get_num_threads()} threads, img/s: "
        + ", ".join(f"{b} {s:.0f}" for b, s in speed.items())
        + f"; INT8/FP32 {speed['int8'] / speed['fp32']:.2f}x, "
        f"FP32/torch {speed['fp32'] / speed['torch']:.2f}x"
    )
    suffix = "_1thread" if threads == 1 else ""
    details = {
        "model": model_name,
        "batch": len(x),
        "onnxruntime": ort.__version__,
        **{f"{b}_images_per_s": round(s, 1) for b, s in speed.items()},
        **{f"{v}_agreement": round(r.agreement, 4) for v, r in reports.items()},
    }
    record_ratio("ort_cpu_vs_torch_eager_throughput" + suffix, speed["fp32"] / speed["torch"],
                 goal=">= 1.5", **details)  # fmt: skip
    record_ratio("ort_int8_vs_fp32_throughput" + suffix, speed["int8"] / speed["fp32"],
                 goal=">= 1.5", **details)  # fmt: skip
    record_ratio("ort_fp16_vs_fp32_throughput" + suffix, speed["fp16"] / speed["fp32"],
                 goal="none (reported)", **details)  # fmt: skip
