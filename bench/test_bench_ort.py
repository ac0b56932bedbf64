"""onnxruntime (CPU EP) vs PyTorch eager: evaluation throughput of the shipped C2F model.

Goal (issue 5): ORT >= 1.5x PyTorch eager at batch 256, both on the same number of CPU threads,
both returning logits and predictions, measured in one run.
"""

from __future__ import annotations

import statistics

import onnxruntime as ort
import pytest
import torch

from bench.conftest import median_time
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig
from c2f_attacks.models.zoo import load_model, shipped_checkpoint
from exporters import OrtC2F, compare_outputs, export_onnx


def _shipped_model() -> tuple[torch.nn.Module, str]:
    if shipped_checkpoint("shapes-vgg16").is_file():
        return load_model("shapes-vgg16"), "shapes-vgg16"
    # Same architecture with untrained weights: throughput does not depend on the weights.
    cfg = VGGConfig(width=0.25, input_size=32, batch_norm=True, head_width=256,
                    mean=(0.5,) * 3, std=(0.25,) * 3)  # fmt: skip
    return C2FVGG16(ShapesC2F.hierarchy, cfg).eval(), "shapes-vgg16 architecture (untrained)"


@pytest.mark.parametrize("threads", [1, None], ids=["1-thread", "all-threads"])
def test_ort_cpu_vs_torch_eager(threads, full_size, record_ratio, benchmark, tmp_path):
    """Both backends on the same thread count. The 1-thread ratio is the robust one: on a loaded
    machine PyTorch's OpenMP threads wait on each other and its multi-thread time degrades far
    more than onnxruntime's, which inflates the all-threads ratio."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    try:
        _measure(threads, full_size, record_ratio, benchmark, tmp_path)
    finally:
        torch.set_num_threads(default_threads)


def _measure(threads, full_size, record_ratio, benchmark, tmp_path):
    batch, repeats = (256, 15) if full_size else (8, 1)
    model, model_name = _shipped_model()
    x = ShapesC2F(batch, seed=SHAPES_SPLITS["test"]).tensors()[0]
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # same CPU budget as PyTorch
    session = OrtC2F(
        export_onnx(model, tmp_path / "model.onnx"),
        providers=["CPUExecutionProvider"],
        batch_size=batch,
        session_options=options,
    )

    def torch_eval():
        with torch.inference_mode():
            return model(x)

    # Also the warm-up of both backends.
    assert compare_outputs(torch_eval(), session(x)).agreement == 1.0
    # Interleaved, one call each per round: load from other processes hits both backends alike.
    rounds = [
        (median_time(torch_eval, 1, warmup=0), median_time(lambda: session(x), 1, warmup=0))
        for _ in range(repeats)
    ]
    t_torch = statistics.median(r[0] for r in rounds)
    t_ort = statistics.median(r[1] for r in rounds)
    benchmark.pedantic(session, args=(x,), rounds=repeats, iterations=1)
    ratio = t_torch / t_ort
    print(
        f"\nbatch {batch}, {torch.get_num_threads()} threads: torch {batch / t_torch:.0f} img/s, "
        f"ORT {batch / t_ort:.0f} img/s, ORT/torch {ratio:.2f}x"
    )
    record_ratio(
        "ort_cpu_vs_torch_eager_throughput" + ("_1thread" if threads == 1 else ""),
        ratio,
        goal=">= 1.5",
        model=model_name,
        batch=batch,
        torch_images_per_s=round(batch / t_torch, 1),
        ort_images_per_s=round(batch / t_ort, 1),
        onnxruntime=ort.__version__,
    )
