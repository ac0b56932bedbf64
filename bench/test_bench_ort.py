"""Evaluation throughput on the CPU: the clean + adversarial evaluation of the shipped C2F model
in PyTorch eager FP32 and in onnxruntime FP32 / FP16 / INT8, all measured in one run.

The workload is what ``evaluate_fooling`` does: N clean test images and their N FGSM adversarial
images (eps 8/255, coarse stage) go through the model in batches of B, logits and predictions
for both, then the per-image fooled mask. ORT: one ``OrtC2F`` session per variant (the graphs of
``export_variants``), built once and reused across batches and repeats. PyTorch: the same
batches through ``torch_outputs`` (eager, ``torch.no_grad``). Every backend gets the same CPU
threads (``torch.set_num_threads`` and ORT's ``intra_op_num_threads``): 1, and all (torch's
default, one per physical core, which is also ORT's own default). Timed interleaved round by
round, so that load from other processes hits all of them alike; medians, in images/s (2N over
the time of one evaluation).

Every ORT variant is timed with and without IOBinding (``OrtC2F(io_binding=True)``), and
``ort_iobinding_vs_run_throughput`` records the FP32 ratio: on the CPU binding saves only the
few logits' copies, so ``OrtC2F`` does not bind CPU tensors by default.

Goals: ORT FP32 >= 1.5x PyTorch eager; ORT INT8 >= 1.5x ORT FP32. FP16 has no goal: the CPU
provider has few float16 kernels and runs most operators through casts to float32, so its speed
is reported, not targeted. Full size (``--benchmark``): N = 256, B = 64, 5 rounds; smoke: N = 8,
B = 4, one round.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

from bench.conftest import interleaved_medians
from c2f_attacks.attacks import FGSM
from c2f_attacks.data.shapes import SHAPES_SPLITS, ShapesC2F
from c2f_attacks.exporters import CALIBRATION_IMAGES, OrtC2F, export_variants, torch_outputs
from c2f_attacks.exporters.evaluate import fooled_mask
from c2f_attacks.models.base import C2FOutput
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig
from c2f_attacks.models.zoo import load_model, shipped_checkpoint
from tests.conftest import shipped_onnx_file

VARIANTS = ("fp32", "fp16", "int8")
DEFAULT_THREADS = torch.get_num_threads()


def _shipped_model() -> tuple[torch.nn.Module, str]:
    if shipped_checkpoint("shapes-vgg16").is_file():
        return load_model("shapes-vgg16"), "shapes-vgg16"
    # Same architecture with untrained weights: throughput does not depend on the weights.
    cfg = VGGConfig(width=0.25, input_size=32, batch_norm=True, head_width=256,
                    mean=(0.5,) * 3, std=(0.25,) * 3)  # fmt: skip
    return C2FVGG16(ShapesC2F.hierarchy, cfg).eval(), "shapes-vgg16 architecture (untrained)"


@pytest.fixture(scope="module")
def setup(full_size, tmp_path_factory):
    """The model, its clean and adversarial test images, the exported variants (checked on the
    clean images) and the batch size. The shipped model's FP32 graph is the session's one
    export (shared with tests/: what ``to_onnx`` returns for it)."""
    import c2f_attacks.exporters.variants as variants

    n, batch = (256, 64) if full_size else (8, 4)
    model, name = _shipped_model()
    clean, y, _ = ShapesC2F(n, seed=SHAPES_SPLITS["test"]).tensors()
    adv = FGSM(model, stage="coarse")(clean).x_adv
    calibration = ShapesC2F(CALIBRATION_IMAGES if full_size else 32, seed=SHAPES_SPLITS["train"])
    with pytest.MonkeyPatch.context() as patch:
        if name == "shapes-vgg16":
            graph = shipped_onnx_file(tmp_path_factory)
            patch.setattr(variants, "to_onnx", lambda model, **options: onnx.load(str(graph)))
        reports = export_variants(
            model, tmp_path_factory.mktemp("ort") / "model.onnx", calibration.tensors()[0],
            clean, y,
            min_agreement=0.0,  # speed is measured here; agreement is reported, tests/ assert it
        )  # fmt: skip
    return model, name, clean, adv, {r.variant: r for r in reports}, batch


@pytest.mark.parametrize("threads", [1, None], ids=["1-thread", "all-threads"])
def test_ort_variants_vs_torch_eager(threads, setup, full_size, record_ratio, benchmark):
    torch.set_num_threads(threads or DEFAULT_THREADS)
    try:
        _measure(threads, setup, full_size, record_ratio, benchmark)
    finally:
        torch.set_num_threads(DEFAULT_THREADS)


def _measure(threads, setup, full_size, record_ratio, benchmark):
    model, model_name, clean, adv, reports, batch = setup
    repeats = 5 if full_size else 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the CPU budget PyTorch has
    sessions = {
        (v, bind): OrtC2F(reports[v].path, ["CPUExecutionProvider"], batch_size=batch,
                          session_options=options, io_binding=bind)
        for bind in (False, True) for v in VARIANTS
    }  # fmt: skip
    predictors = {"torch": lambda x: torch_outputs(model, x, batch)}
    predictors |= {f"{v}{'_bound' if bind else ''}": s for (v, bind), s in sessions.items()}

    def evaluation(predict) -> tuple[C2FOutput, C2FOutput, torch.Tensor]:
        out_clean, out_adv = predict(clean), predict(adv)
        return out_clean, out_adv, fooled_mask(out_clean, out_adv, "coarse")

    results = {name: evaluation(p) for name, p in predictors.items()}
    for name, (out_clean, out_adv, _) in results.items():  # binding returns the same outputs
        if name.endswith("_bound"):
            plain = results[name.removesuffix("_bound")]
            assert torch.equal(out_clean.fine_pred, plain[0].fine_pred)
            assert torch.equal(out_adv.fine_pred, plain[1].fine_pred)
    calls = [lambda p=p: evaluation(p) for p in predictors.values()]
    times = dict(zip(predictors, interleaved_medians(calls, repeats, warmup=1)))
    benchmark.pedantic(evaluation, args=(sessions["int8", False],), rounds=repeats, iterations=1)
    speed = {name: 2 * len(clean) / t for name, t in times.items()}
    print(
        f"\n{len(clean)} clean + {len(adv)} adversarial images, batch {batch}, "
        f"{torch.get_num_threads()} threads, img/s: "
        + ", ".join(f"{name} {s:.0f}" for name, s in speed.items())
        + f"; INT8/FP32 {speed['int8'] / speed['fp32']:.2f}x, "
        f"FP32/torch {speed['fp32'] / speed['torch']:.2f}x, "
        f"FP32 bound/plain {speed['fp32_bound'] / speed['fp32']:.2f}x"
    )
    suffix = "_1thread" if threads == 1 else ""
    details = {
        "model": model_name,
        "images": 2 * len(clean),
        "batch": batch,
        "onnxruntime": ort.__version__,
        "intra_op_num_threads": options.intra_op_num_threads,
        **{f"{name}_images_per_s": round(s, 1) for name, s in speed.items()},
        **{f"{name}_fooling_ratio": round(r[2].float().mean().item(), 4)
           for name, r in results.items() if not name.endswith("_bound")},
        **{f"{v}_agreement": round(r.agreement, 4) for v, r in reports.items()},
    }  # fmt: skip
    ratios = {
        "ort_cpu_vs_torch_eager_throughput": (speed["fp32"] / speed["torch"], ">= 1.5"),
        "ort_int8_vs_fp32_throughput": (speed["int8"] / speed["fp32"], ">= 1.5"),
        "ort_fp16_vs_fp32_throughput": (speed["fp16"] / speed["fp32"], "none (reported)"),
        "ort_iobinding_vs_run_throughput": (
            speed["fp32_bound"] / speed["fp32"],
            "none (decides OrtC2F's io_binding on the CPU)",
        ),
    }
    for name, (value, goal) in ratios.items():
        record_ratio(name + suffix, value, goal=goal, device="cpu", **details)
