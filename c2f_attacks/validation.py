"""Input checks shared by every public entry point.

Fail early, with a message naming the problem.
"""

from __future__ import annotations

import numbers
from fractions import Fraction
from typing import Any

import torch

from c2f_attacks.errors import UserError


def parse_number(value: Any, what: str) -> float:
    """A number (bool excepted), or text like "0.03", "1e-3" or "8/255", as a float: the one
    parser of numbers given as text (options, config files, settings). "nan" and "inf" read as
    themselves, for the caller's range check to name. Anything else is a
    :class:`~c2f_attacks.errors.UserError` naming ``what`` and the value."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except ZeroDivisionError:
            raise UserError(f"{what}: {value!r} divides by zero") from None
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            pass
    raise UserError(f"{what} must be a number or a fraction like 8/255; {value!r} is not a "
                    "number")  # fmt: skip


def check_image_batch(
    x: object,
    *,
    channels: int | None = 3,
    size: int | None = None,
    name: str = "images",
    check_range: bool = True,
) -> torch.Tensor:
    """Validate a float image batch (N, C, H, W) in [0, 1] and return it.

    ``check_range`` looks at every value (NaN, inf, outside [0, 1]); it costs one reduction and
    is what the library's entry points use. The model's own forward only checks the layout.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise UserError(
            f"{name} must have shape (N, C, H, W), got {tuple(x.shape)} ({x.dim()} dimensions)"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be floating point with values in [0, 1], got dtype {x.dtype} "
            "(convert with x.float() / 255)"
        )
    if channels is not None and x.shape[1] != channels:
        raise UserError(
            f"{name} must have {channels} channels, got shape {tuple(x.shape)} "
            f"({x.shape[1]} channels)"
        )
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        raise UserError(
            f"{name} must be {size}x{size} pixels for this model, got {x.shape[-2]}x{x.shape[-1]}"
        )
    if x.shape[0] == 0:
        raise UserError(f"{name} is an empty batch")
    if check_range:
        lo, hi = torch.aminmax(x.detach())
        lo, hi = lo.item(), hi.item()
        if lo != lo or hi != hi:  # NaN propagates through aminmax
            raise UserError(f"{name} contain NaN values")
        if lo == float("-inf") or hi == float("inf"):
            raise UserError(f"{name} contain infinite values")
        if lo < 0.0 or hi > 1.0:
            raise UserError(
                f"{name} must be in [0, 1] (pixel space; normalization lives inside the model), "
                f"got values in [{lo:.4g}, {hi:.4g}]"
            )
    return x


def check_labels(y: object, n: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Validate integer labels (N,) in 0..num_classes-1."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got dtype {y.dtype}")
    if y.shape != (n,):
        raise UserError(f"{name} must have shape ({n},) to match the images, got {tuple(y.shape)}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(f"{name} must lie in 0..{num_classes - 1}, got [{y.min()}, {y.max()}]")
    return y.long()


def check_matches_model(x: torch.Tensor, model: torch.nn.Module, name: str = "images") -> None:
    """Raise ValueError unless ``x`` has the dtype and device of the model's floating-point
    parameters (or buffers, for a model without parameters); a model with none passes."""
    reference = next(
        (t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None
    )
    if reference is None:
        return
    if x.dtype != reference.dtype or x.device != reference.device:
        raise UserError(
            f"{name} are {x.dtype} on {x.device} but the model's parameters are "
            f"{reference.dtype} on {reference.device}: convert the images with "
            f"x.to(device={str(reference.device)!r}, dtype={reference.dtype})"
        )
