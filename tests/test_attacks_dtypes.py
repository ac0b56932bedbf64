"""Low-precision attacks (dtype-aware sanity tolerance) and dtype/device mismatches."""

from __future__ import annotations

import pytest
import torch

from c2f_attacks.attacks import FGSM, LRPC, LRPF, PGD
from c2f_attacks.attacks.base import sanity_tolerance
from tests.conftest import small_c2f, small_cnn

LOW = [torch.bfloat16, torch.float16]


def test_tolerance_follows_the_dtype():
    assert sanity_tolerance(torch.float32) == 1e-6
    assert sanity_tolerance(torch.float64) == 1e-6
    assert sanity_tolerance(torch.bfloat16) == 4 * torch.finfo(torch.bfloat16).eps
    assert sanity_tolerance(torch.float16) == 4 * torch.finfo(torch.float16).eps


def _runs_on_cpu(model: torch.nn.Module, x: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as err:  # e.g. no fp16 convolution kernel in this torch build
        pytest.skip(f"{x.dtype} forward not supported on this CPU build: {err}")


@pytest.mark.parametrize("dtype", LOW)
def test_dense_attacks_run_in_low_precision(dtype):
    """bf16/fp16 rounding of x + delta exceeds eps by more than 1e-6 (the old fixed tolerance
    raised AttackSanityError on every such run); the result keeps the dtype and the budget."""
    model = small_cnn(0).to(dtype)
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    _runs_on_cpu(model, x)
    for atk in (
        PGD(model, eps=0.3, alpha=0.05, steps=5),
        FGSM(model, eps=0.3),
        PGD(model, eps=0.3, alpha=0.05, steps=3, minimal_eps=True, search_steps=2),
    ):
        res = atk(x)
        assert res.x_adv.dtype == dtype and not res.x_adv.isnan().any()
        linf = (res.x_adv.float() - x.float()).abs().flatten(1).amax(1)
        assert (linf <= res.eps + sanity_tolerance(dtype)).all()
        assert res.success.any()


@pytest.mark.parametrize("dtype", LOW)
def test_lrp_attacks_run_in_low_precision(dtype):
    model = small_c2f(3).to(dtype)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(5)).to(dtype)
    _runs_on_cpu(model, x)
    res = LRPF(model, alpha=0.05, steps=6, top_k=0.2)(x)
    assert res.x_adv.dtype == dtype and res.success.any()
    res = LRPC(model, alpha=0.05, steps=4, eps=0.1, mask="gradient")(x)
    assert res.x_adv.dtype == dtype and not res.x_adv.isnan().any()


def test_dtype_mismatch_is_one_clear_error_before_any_work():
    model = small_cnn(0)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"torch.float64 .* torch.float32"):
        PGD(model)(x)
    with pytest.raises(ValueError, match=r"torch.bfloat16 .* torch.float32"):
        LRPC(small_c2f())(torch.rand(2, 3, 32, 32).to(torch.bfloat16))
    assert not calls


def test_device_mismatch_is_one_clear_error():
    model = small_cnn(0).to("meta")  # parameters on another device than the images
    with pytest.raises(ValueError, match="meta"):
        PGD(model)(torch.rand(2, 3, 16, 16))
