"""Mask sources of the LRP-guided scheme (``mask=`` of LRPC and LRPF): which pixels it perturbs.

Every source marks the ``k`` fraction of pixels (``ceil(k * H * W)``, at least one) of each image
that scores highest by its own map, except ``object``, which marks the ground-truth object, and
``random_object``, which marks at most that many of its pixels.
For an image with explained class t (the clean decision of the attacked stage) at the iterate x:

- ``lrp``: ``sum_c R_c,p``, the LRP relevance of t (the paper's mask); one LRP pass;
- ``least_relevant``: ``-sum_c R_c,p``, the k *least* relevant pixels (a control); one LRP pass;
- ``gradient``: ``sum_c |d margin_t / dx_c,p|``; one forward + one backward;
- ``gradient_x_input``: ``sum_c x_c,p * d margin_t / dx_c,p`` (LRP-0 on ReLU nets); one forward
  + one backward;
- ``random``: ``u_p ~ U[0, 1)`` hashed from ``(seed, global image index, p)``; no model call;
- ``object``: the ground-truth object mask given as ``atk(x, object_mask=...)``; no model call;
- ``random_object``: ``k`` random pixels of the ground-truth object (hashed as ``random``); no
  model call.

``margin_t = z_t - max_{j != t} z_j`` over the stage's allowed classes. The map-based sources
are recomputed at the iterate on the attack's refresh schedule (every ``refresh`` steps); the
``random``, ``object`` and ``random_object`` masks do not depend on the iterate, so they are
computed once. The ``random`` mask of image i depends on ``(seed, index[i])`` only, never on the
rest of the batch.
An LRP pass costs one forward and one backward (the relevance term's differentiable mode one
backward more), whichever source asked for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from c2f_attacks.attacks.noise import uniform_like
from c2f_attacks.lrp.explain import top_fraction_mask
from c2f_attacks.registry import Registry


@dataclass
class MaskInputs:
    """What a source may use; only what its ``needs`` names is filled in (others None)."""

    x: torch.Tensor  #: (n, C, H, W) the iterate
    index: torch.Tensor  #: (n,) global image indices
    top_k: float  #: the fraction of pixels to mark
    seed: int
    heat: torch.Tensor | None = None  #: (n, H, W) LRP heatmap of t at x
    margin_grad: torch.Tensor | None = None  #: (n, C, H, W) d margin_t / dx
    object_mask: torch.Tensor | None = None  #: (n, H, W) bool


class MaskSource:
    """Chooses the pixels to perturb: ``select(inputs) -> BoolTensor (n, H, W)``.

    ``needs`` names what the attack computes at the iterate first (and counts): None, "lrp"
    (the heatmap), "gradient" (the margin gradient) or "object" (the caller's masks)."""

    name: ClassVar[str]
    needs: ClassVar[str | None] = None
    #: True when the mask does not depend on the iterate (computed once, not at each refresh)
    fixed: ClassVar[bool] = False

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        raise NotImplementedError


class LRPMask(MaskSource):
    """Top-k pixels of the LRP heatmap ``sum_c R_c,p`` of t (the paper's mask)."""

    name, needs = "lrp", "lrp"

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        return top_fraction_mask(inputs.heat, inputs.top_k)


class LeastRelevantMask(MaskSource):
    """Bottom-k pixels of the LRP heatmap: a control that should do worse than ``lrp``."""

    name, needs = "least_relevant", "lrp"

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        return top_fraction_mask(-inputs.heat, inputs.top_k)


class GradientMask(MaskSource):
    """Top-k pixels of the saliency ``sum_c |d margin_t / dx_c,p|``."""

    name, needs = "gradient", "gradient"

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        return top_fraction_mask(inputs.margin_grad.abs().sum(dim=1), inputs.top_k)


class GradientXInputMask(MaskSource):
    """Top-k pixels of gradient times input ``sum_c x_c,p * d margin_t / dx_c,p``."""

    name, needs = "gradient_x_input", "gradient"

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        return top_fraction_mask((inputs.x * inputs.margin_grad).sum(dim=1), inputs.top_k)


class RandomMask(MaskSource):
    """Top-k pixels of uniform noise ``u_p`` hashed from ``(seed, index[i], p)``: k random
    pixels per image, the same whatever batch the image is in."""

    name, fixed = "random", True

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        noise = uniform_like(inputs.x[:, :1], inputs.seed, inputs.index).float()
        return top_fraction_mask(noise[:, 0], inputs.top_k)


class ObjectMask(MaskSource):
    """The ground-truth object pixels (k does not apply: the mask is the object's size)."""

    name, needs, fixed = "object", "object", True

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        return inputs.object_mask


class RandomObjectMask(MaskSource):
    """k random pixels of the ground-truth object (all of it when it is smaller): a control
    that perturbs the object without any explanation, telling apart "on the object" from "on
    the pixels an explanation picks"."""

    name, needs, fixed = "random_object", "object", True

    def select(self, inputs: MaskInputs) -> torch.Tensor:
        noise = uniform_like(inputs.x[:, :1], inputs.seed, inputs.index).float()[:, 0]
        # pixels off the object rank below every object pixel
        score = torch.where(inputs.object_mask, noise, noise - 2)
        mask = top_fraction_mask(score, inputs.top_k)
        return mask & inputs.object_mask


MASK_SOURCES: Registry[type[MaskSource]] = Registry("mask source")
for _source in (LRPMask, GradientMask, GradientXInputMask, RandomMask, LeastRelevantMask,
                ObjectMask, RandomObjectMask):  # fmt: skip
    MASK_SOURCES.register(_source.name, _source)


def get_mask_source(name: str) -> MaskSource:
    """The mask source called ``name`` (one of ``MASK_SOURCES.names()``)."""
    return MASK_SOURCES.get(name)()
