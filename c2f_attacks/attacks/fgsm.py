"""Fast gradient sign method (Goodfellow et al. 2015).

``x_adv = clip_[0,1](x + eps * sign(grad_x CE))``.

One PGD step of size eps from the clean image (the eps projection is then a no-op), so it shares
PGD's code, including the minimal-eps search.
"""

from __future__ import annotations

from torch import nn

from c2f_attacks.attacks.criteria import Criterion
from c2f_attacks.attacks.pgd import PGD
from c2f_attacks.attacks.registry import register_attack


@register_attack
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one signed CE-gradient step of eps.

    ``FGSM(model, eps=8/255, stage=None, minimal_eps=False, search_steps=8, seed=0,
    memory_format="auto", criterion=None)``; ``minimal_eps=True`` bisects a per-image eps."""

    name = "fgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        stage: str | None = None,
        minimal_eps: bool = False,
        search_steps: int = 8,
        seed: int = 0,
        memory_format: str = "auto",
        criterion: str | Criterion | None = None,
    ):
        super().__init__(
            model, eps=eps, alpha=eps, steps=1, random_start=False, loss="ce", early_stop=False,
            stage=stage, minimal_eps=minimal_eps, search_steps=search_steps, seed=seed,
            memory_format=memory_format, criterion=criterion,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"FGSM(eps={self.eps:.5g}, stage={self.stage!r}, minimal_eps={self.minimal_eps}, "
            f"memory_format={self.memory_format!r})"
        )
