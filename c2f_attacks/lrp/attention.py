"""LRP rules for softmax attention ``out = softmax(q k^T * scale + mask) v``.

An attention rule says how relevance crosses the two products between activations
(``q k^T`` and ``A v``) and the softmax, in gradient-times-input form:

* :class:`CPAttention` (CP-LRP, Ali et al., ICML 2022; LXT's choice for torchvision's ViT): the
  attention weights ``A`` are constants. Relevance reaches the values alone, through the fixed
  mixing ``out_i = sum_j A_ij v_j`` (LRP-0): ``R_{v_j} = v_j * sum_i A_ij R_i / out_i``; queries
  and keys get none. It conserves relevance across the block.
* :class:`AttnLRP` (Achtibat et al., ICML 2024): the softmax keeps its own gradient, which in
  gradient-times-input form is AttnLRP's softmax rule ``R_x_i = x_i (R_i - s_i sum_j R_j)``,
  and both products get the uniform rule: each factor of ``a b`` receives half of the
  relevance, ``R_a = R_b = R / 2`` (in total over the summed index), i.e. half the gradient.

The linear projections around the attention (q, k, v, output) are linear layers: they get the
composite's rule for ``nn.Linear`` unless the attention rule names ``projections``. torchvision's
``nn.MultiheadAttention`` computes them functionally (LXT leaves them on the plain gradient,
i.e. LRP-0: ``CPAttention(projections=Epsilon(0.0))`` reproduces that).

Where attention is computed: ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``,
re-implemented here with the rule), ``F.scaled_dot_product_attention`` (timm, fused) and the
softmax and matrix products inside a module the composite names with an attention rule
(torchvision's Swin, timm's un-fused attention).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch.nn import functional as F

from c2f_attacks.errors import UserError
from c2f_attacks.lrp.rules import GradientEdits, Rule

#: ``project(name, input, weight, bias)``: a projection's output with its LRP rule
Project = Callable[[str, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class AttentionRule(Rule):
    """Base class: how relevance crosses softmax attention (module docstring).

    Args:
        projections: the rule for the attention's own linear projections; None: the
            composite's rule for ``nn.Linear``.
    """

    #: whether queries and keys receive relevance (their projections then need rules)
    ruled_queries = True

    def __init__(self, projections: Rule | None = None):
        self.projections = projections

    def weights(self, a: torch.Tensor, edits: GradientEdits) -> torch.Tensor:
        """The softmax output ``a`` as the rule treats it."""
        return a

    def product(self, a: torch.Tensor, b: torch.Tensor, edits: GradientEdits) -> tuple:
        """The factors of a product of two activations as the rule treats them."""
        return a, b

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        scale: float,
        edits: GradientEdits,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(softmax(q k^T * scale + mask) v, the weights)`` over the last two dimensions,
        ``mask`` additive (broadcastable to the logits) or None."""
        qs, ks = self.product(q * scale, k, edits)
        a = self.weights(_softmax_of(qs, ks, mask), edits)
        aa, vv = self.product(a, v, edits)
        return torch.matmul(aa, vv), a


class CPAttention(AttentionRule):
    """CP-LRP: the attention weights are constants, relevance flows through the values:
    ``R_{v_j} = v_j * sum_i A_ij R_i / out_i``."""

    ruled_queries = False

    def weights(self, a, edits):
        return edits.frozen(a)

    def attend(self, q, k, v, mask, scale, edits, need_weights=False):
        if edits.differentiable:
            return super().attend(q, k, v, mask, scale, edits, need_weights)
        # A plain explanation: the weights outside the graph, whose backward is then A^T g
        # alone (a fused kernel's backward would compute the query and key gradients too)
        with torch.no_grad():
            a = _softmax_of(q * scale, k, mask)
        return torch.matmul(a, v), a


class AttnLRP(AttentionRule):
    """AttnLRP: the softmax's own gradient (its softmax rule) and the uniform rule on ``q k^T``
    and ``A v`` (each factor half the relevance)."""

    def product(self, a, b, edits):
        return edits.scaled(a, 0.5), edits.scaled(b, 0.5)


def _softmax_of(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    logits = torch.matmul(q, k.transpose(-2, -1))
    return torch.softmax(logits if mask is None else logits + mask, dim=-1)


# -- the functional entry points ----------------------------------------------------------------


def _additive(mask: torch.Tensor | None, dtype: torch.dtype, allowed: bool) -> torch.Tensor | None:
    """An additive float mask. A boolean mask marks the entries that take part (``allowed``,
    scaled_dot_product_attention's convention) or those that do not (MultiheadAttention's)."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    keep = mask if allowed else ~mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~keep, float("-inf")
    )


def _causal(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    n, s = q.shape[-2], k.shape[-2]
    return torch.ones(n, s, dtype=torch.bool, device=q.device).tril()


_SDPA_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for n in ("query", "key", "value")
    ]
    + [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
        for n, d in (("attn_mask", None), ("dropout_p", 0.0), ("is_causal", False))
    ]
    + [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
        for n, d in (("scale", None), ("enable_gqa", False))
    ]
)  # a builtin without a signature


def scaled_dot_product_attention(rule: AttentionRule, edits: GradientEdits, *args, **kwargs):
    """``F.scaled_dot_product_attention(*args, **kwargs)`` with ``rule``'s gradient."""
    bound = _SDPA_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    p = bound.arguments
    q, k, v = p["query"], p["key"], p["value"]
    if p["dropout_p"]:
        raise UserError(
            f"scaled_dot_product_attention with dropout_p={p['dropout_p']} in eval mode: an "
            "explanation needs a deterministic model"
        )
    mask = p["attn_mask"]
    if p["is_causal"]:
        mask = _causal(q, k)
    if p["enable_gqa"] and k.shape[-3] != q.shape[-3]:
        repeats = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeats, -3), v.repeat_interleave(repeats, -3)
    scale = p["scale"] if p["scale"] is not None else q.shape[-1] ** -0.5
    out, _ = rule.attend(q, k, v, _additive(mask, q.dtype, allowed=True), scale, edits)
    return out


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def multi_head_attention(
    rule: AttentionRule, edits: GradientEdits, project: Project, *args, **kwargs
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``F.multi_head_attention_forward(*args, **kwargs)`` (``nn.MultiheadAttention``'s
    computation, eval mode) with ``rule``'s gradient; ``project`` applies the projections'
    rules. The extra key/value rows (``add_bias_kv``, ``add_zero_attn``, static keys) are
    refused by the model check before any pass."""
    bound = _MHA_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    p = bound.arguments
    extras = ("bias_k", "bias_v", "static_k", "static_v")
    if p["add_zero_attn"] or any(p[n] is not None for n in extras):
        raise UserError(
            "MultiheadAttention with add_bias_kv, add_zero_attn or static keys has no LRP rule"
        )
    query, key, value = p["query"], p["key"], p["value"]
    batched = query.dim() == 3
    pad_mask = p["key_padding_mask"]
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        pad_mask = None if pad_mask is None else pad_mask.unsqueeze(0)
    length, n, embed = query.shape
    heads = p["num_heads"]
    if p["use_separate_proj_weight"]:
        weights = p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]
    else:
        weights = p["in_proj_weight"].chunk(3)
    biases = (None,) * 3 if p["in_proj_bias"] is None else p["in_proj_bias"].chunk(3)

    def heads_first(t: torch.Tensor) -> torch.Tensor:  # (L, N, E) -> (N, H, L, E / H)
        return t.unflatten(-1, (heads, -1)).permute(1, 2, 0, 3)

    q, k, v = (
        heads_first(project(name, t, w, b) if rule.ruled_queries or name == "v"
                    else F.linear(t, w, b))
        for name, t, w, b in zip("qkv", (query, key, value), weights, biases)
    )  # fmt: skip
    mask = _additive(p["attn_mask"], q.dtype, allowed=False)
    if mask is not None and mask.dim() == 3:  # (N * H, L, S)
        mask = mask.unflatten(0, (n, heads))
    if pad_mask is not None:  # (N, S)
        pad = _additive(pad_mask, q.dtype, allowed=False)[:, None, None, :]
        mask = pad if mask is None else mask + pad
    out, a = rule.attend(q, k, v, mask, q.shape[-1] ** -0.5, edits, bool(p["need_weights"]))
    out = project("out", out.permute(2, 0, 1, 3).reshape(length, n, embed),
                  p["out_proj_weight"], p["out_proj_bias"])  # fmt: skip
    if a is not None and p["average_attn_weights"]:
        a = a.mean(dim=1)
    if not batched:
        out = out.squeeze(1)
        a = None if a is None else a.squeeze(0)
    return out, a
