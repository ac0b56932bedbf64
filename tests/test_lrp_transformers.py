"""LRP on transformers and LayerNorm networks: torchvision's ViT, Swin and ConvNeXt and timm's
ViT against a float64 reference of explicit relevance messages, conservation, the
differentiable mode against finite differences, and the model check.

The reference (:class:`Tape`) re-runs each model's forward from its parameters as a list of
operations, each with its LRP message written out (``R_in`` from ``R_out``), and replays them
backwards. It shares nothing with the engine (no hooks, no gradient-times-input): the linear
maps' transposes come from ``torch.func.vjp`` of the map alone. Its forward must reproduce the
model's logits, which every comparison checks first. The LXT oracle for the ViT lives in
``test_lrp_transformers_lxt.py``.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer

from c2f_attacks.cli import main
from c2f_attacks.data import SHAPES_HIERARCHY
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.lrp import (
    AttnLRP,
    Composite,
    CPAttention,
    Epsilon,
    Flat,
    Norm,
    check_explainable,
    lrp,
    stage_relevance,
)
from c2f_attacks.models import InducedC2F

timm = pytest.importorskip("timm")

TOL = 1e-9  # float64 against float64: far above rounding, far below any wrong rule


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).norm() / ref.norm()).item()


def stab(t: torch.Tensor, eps: float) -> torch.Tensor:
    return t + eps * torch.where(t >= 0, 1.0, -1.0)


# -- the reference ---------------------------------------------------------------------------


def transpose(fn, a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``J^T r`` of a map ``fn`` that is linear in ``a``."""
    return torch.func.vjp(fn, a)[1](r)[0]


class Tape:
    """A forward of recorded operations, each with its LRP message; :meth:`relevance` replays
    the messages from the output back to the input."""

    def __init__(self):
        self.ops: list[tuple[tuple, torch.Tensor, object]] = []

    def _record(self, inputs: tuple, out: torch.Tensor, message) -> torch.Tensor:
        self.ops.append((inputs, out, message))
        return out

    def relevance(self, x: torch.Tensor, out: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        rel = {id(out): seed}
        for inputs, output, message in reversed(self.ops):
            r = rel.pop(id(output), None)
            if r is None:
                continue
            for t, m in zip(inputs, message(r)):
                if m is not None:
                    rel[id(t)] = rel[id(t)] + m if id(t) in rel else m
        return rel[id(x)]

    # -- linear layers ------------------------------------------------------------------------
    def linear(self, a, fn, weight, bias, rule: str, param: float = 0.0) -> torch.Tensor:
        """``fn(a, weight, bias)`` (a conv or linear map) with the rule ``"epsilon"`` (``param``:
        epsilon), ``"gamma"`` (``param``: gamma), ``"zplus"`` or ``"flat"``."""
        z = fn(a, weight, bias)

        def lin(w):
            return lambda t: fn(t, w, None)

        def message(r):
            if rule == "epsilon":
                return (a * transpose(lin(weight), a, r / stab(z, param)),)
            if rule == "flat":
                ones = torch.ones_like(a)
                count = fn(ones, torch.ones_like(weight), None)
                return (transpose(lin(torch.ones_like(weight)), ones, r / stab(count, 1e-6)),)
            ap, an = a.clamp(min=0), a.clamp(max=0)
            if rule == "zplus":  # (a+ w+ + a- w-) / stab(z+)
                wp, wn = weight.clamp(min=0), weight.clamp(max=0)
                bp = None if bias is None else bias.clamp(min=0)
                s = r / stab(fn(ap, wp, bp) + fn(an, wn, None), 1e-6)
                return (ap * transpose(lin(wp), a, s) + an * transpose(lin(wn), a, s),)
            # gamma: W^+g = W + g W+, W^-g = W + g W-; positive outputs share by
            # (a+ W^+g + a- W^-g), negative ones by (a+ W^-g + a- W^+g)
            up, down = weight + param * weight.clamp(min=0), weight + param * weight.clamp(max=0)
            b_up = b_down = None
            if bias is not None:
                b_up, b_down = bias + param * bias.clamp(min=0), bias + param * bias.clamp(max=0)
            s_up = r * (z > 0) / stab(fn(ap, up, b_up) + fn(an, down, None), 1e-6)
            s_down = r * (z < 0) / stab(fn(ap, down, b_down) + fn(an, up, None), 1e-6)
            return (
                ap * (transpose(lin(up), a, s_up) + transpose(lin(down), a, s_down))
                + an * (transpose(lin(down), a, s_up) + transpose(lin(up), a, s_down)),
            )

        return self._record((a,), z, message)

    def pool(self, a, fn) -> torch.Tensor:
        """Average pooling, proportional rule (epsilon 1e-6 over the pooling weights)."""
        z = fn(a)
        return self._record((a,), z, lambda r: (a * transpose(fn, a, r / stab(z, 1e-6)),))

    # -- the rest -----------------------------------------------------------------------------
    def route(self, fn, *inputs) -> torch.Tensor:
        """An index map (reshape, permute, roll, slicing, cat): relevance follows the entries."""
        out = fn(*inputs)
        return self._record(inputs, out, lambda r: torch.func.vjp(fn, *inputs)[1](r))

    def add(self, a, b) -> torch.Tensor:
        """``a + b`` (residuals, position embeddings): shares in proportion to the summands."""
        z = a + b
        return self._record((a, b), z, lambda r: (a * r / z, b * r / z))

    def scale(self, a, c) -> torch.Tensor:
        """``a * c`` for a constant ``c`` (layer scale): relevance passes unchanged."""
        return self._record((a,), a * c, lambda r: (r,))

    def activation(self, a, fn) -> torch.Tensor:
        """Identity rule (GELU): ``R_in = R_out``."""
        return self._record((a,), fn(a), lambda r: (r,))

    def layer_norm(self, x, norm: nn.LayerNorm) -> torch.Tensor:
        """``R_x = x * s * (u - mean(u))``, ``u = w R / y``, with the scale ``s`` constant."""
        mean = x.mean(-1, keepdim=True)
        s = ((x - mean).square().mean(-1, keepdim=True) + norm.eps).rsqrt()
        y = (x - mean) * s * norm.weight + norm.bias

        def message(r):
            u = norm.weight * r / y
            return (x * s * (u - u.mean(-1, keepdim=True)),)

        return self._record((x,), y, message)

    def attention(self, q, k, v, mask, scale: float, rule: str) -> torch.Tensor:
        """``softmax(q k^T * scale + mask) v`` with CP-LRP (``"cp"``: weights constant) or
        AttnLRP (``"attnlrp"``: softmax rule, uniform rule on both products)."""
        qs = q * scale
        qk = qs @ k.transpose(-2, -1)
        logits = qk if mask is None else qk + mask
        a = logits.softmax(-1)
        out = a @ v

        def message(r):
            g = r / out  # relevance per unit of output
            if rule == "cp":
                return None, None, v * (a.transpose(-2, -1) @ g)
            r_v = v * (a.transpose(-2, -1) @ g) / 2
            r_a = a * (g @ v.transpose(-2, -1)) / 2
            r_qk = qk * (r_a - a * r_a.sum(-1, keepdim=True))  # softmax rule, the mask kept out
            gqk = r_qk / qk
            return qs * (gqk @ k) / 2, k * (gqk.transpose(-2, -1) @ qs) / 2, r_v

        return self._record((q, k, v), out, message)


def explain(model: nn.Module, forward, x: torch.Tensor, target: torch.Tensor, **rules):
    """The reference relevance of ``target`` (one-hot) for ``forward(tape, model, x, **rules)``,
    after checking that it reproduces the model's logits."""
    tape = Tape()
    out = forward(tape, model, x, **rules)
    torch.testing.assert_close(out, model(x), rtol=1e-12, atol=1e-12)
    return tape.relevance(x, out, F.one_hot(target, out.shape[1]).to(out.dtype))


def _conv(conv: nn.Conv2d):
    return lambda t, w, b: F.conv2d(t, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:  # (N, L, E) -> (N, H, L, E / H)
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:  # (N, H, L, d) -> (N, L, H * d)
    return t.transpose(1, 2).flatten(-2)


def _mlp(tape, linears, y, lin):
    h = tape.linear(y, F.linear, linears[0].weight, linears[0].bias, *lin)
    h = tape.activation(h, F.gelu)
    return tape.linear(h, F.linear, linears[1].weight, linears[1].bias, *lin)


def vit_reference(tape, m, x, first, lin, attention, projections=None):
    """torchvision's VisionTransformer; ``first``/``lin``/``projections``: (rule, param)."""
    projections = projections or lin
    h = tape.linear(x, _conv(m.conv_proj), m.conv_proj.weight, m.conv_proj.bias, *first)
    h = tape.route(lambda t: t.flatten(2).transpose(1, 2), h)
    cls = m.class_token.expand(x.shape[0], -1, -1)
    h = tape.route(lambda t: torch.cat([cls, t], 1), h)
    h = tape.add(h, m.encoder.pos_embedding)
    for block in m.encoder.layers:
        mha = block.self_attention
        y = tape.layer_norm(h, block.ln_1)
        wq, wk, wv = mha.in_proj_weight.chunk(3)
        bq, bk, bv = mha.in_proj_bias.chunk(3)
        v = tape.linear(y, F.linear, wv, bv, *projections)
        if attention == "cp":  # queries and keys carry no relevance
            q, k = F.linear(y, wq, bq), F.linear(y, wk, bk)
        else:
            q = tape.linear(y, F.linear, wq, bq, *projections)
            k = tape.linear(y, F.linear, wk, bk, *projections)
        q, k, v = (tape.route(lambda t, n=mha.num_heads: _heads(t, n), t) for t in (q, k, v))
        a = tape.attention(q, k, v, None, q.shape[-1] ** -0.5, attention)
        a = tape.route(_merge, a)
        a = tape.linear(a, F.linear, mha.out_proj.weight, mha.out_proj.bias, *projections)
        h = tape.add(a, h)
        h = tape.add(h, _mlp(tape, [block.mlp[0], block.mlp[3]], tape.layer_norm(h, block.ln_2),
                             lin))  # fmt: skip
    h = tape.route(lambda t: t[:, 0], tape.layer_norm(h, m.encoder.ln))
    return tape.linear(h, F.linear, m.heads.head.weight, m.heads.head.bias, *lin)


def timm_vit_reference(tape, m, x, first, lin, attention):
    """timm's VisionTransformer (class token, learned position embedding, token pooling)."""
    proj = m.patch_embed.proj
    h = tape.linear(x, _conv(proj), proj.weight, proj.bias, *first)
    h = tape.route(lambda t: t.flatten(2).transpose(1, 2), h)
    cls = m.cls_token.expand(x.shape[0], -1, -1)
    h = tape.add(tape.route(lambda t: torch.cat([cls, t], 1), h), m.pos_embed)
    for block in m.blocks:
        at = block.attn
        y = tape.layer_norm(h, block.norm1)
        qkv = tape.linear(y, F.linear, at.qkv.weight, at.qkv.bias, *lin)
        q, k, v = (
            tape.route(
                lambda t, i=i, n=at.num_heads: _heads(t.unflatten(-1, (3, -1))[:, :, i], n), qkv
            )
            for i in range(3)
        )
        a = tape.route(_merge, tape.attention(q, k, v, None, at.scale, attention))
        h = tape.add(h, tape.linear(a, F.linear, at.proj.weight, at.proj.bias, *lin))
        h = tape.add(h, _mlp(tape, [block.mlp.fc1, block.mlp.fc2], tape.layer_norm(h, block.norm2),
                             lin))  # fmt: skip
    h = tape.route(lambda t: t[:, 0], tape.layer_norm(h, m.norm))
    return tape.linear(h, F.linear, m.head.weight, m.head.bias, *lin)


def _layer_norm_2d(tape, t, norm):
    t = tape.route(lambda u: u.permute(0, 2, 3, 1), t)
    return tape.route(lambda u: u.permute(0, 3, 1, 2), tape.layer_norm(t, norm))


def convnext_reference(tape, m, x, first, conv, lin):
    """torchvision's ConvNeXt: stem, CNBlocks (depthwise conv, LayerNorm, MLP, layer scale,
    residual), downsampling (LayerNorm2d, conv), pooled LayerNorm2d head."""
    for stage in m.features:
        if isinstance(stage[0], nn.Conv2d):  # the stem or a downsampling layer
            for layer in stage:
                if isinstance(layer, nn.Conv2d):
                    rule = first if layer is m.features[0][0] else conv
                    x = tape.linear(x, _conv(layer), layer.weight, layer.bias, *rule)
                else:
                    x = _layer_norm_2d(tape, x, layer)
            continue
        if not hasattr(stage[0], "layer_scale"):  # downsampling: LayerNorm2d, conv
            x = _layer_norm_2d(tape, x, stage[0])
            x = tape.linear(x, _conv(stage[1]), stage[1].weight, stage[1].bias, *conv)
            continue
        for block in stage:
            dw, _, norm, fc1, _, fc2, _ = block.block
            y = tape.linear(x, _conv(dw), dw.weight, dw.bias, *conv)
            y = tape.route(lambda t: t.permute(0, 2, 3, 1), y)
            y = _mlp(tape, [fc1, fc2], tape.layer_norm(y, norm), lin)
            y = tape.route(lambda t: t.permute(0, 3, 1, 2), y)
            x = tape.add(tape.scale(y, block.layer_scale), x)
    x = tape.pool(x, lambda t: F.adaptive_avg_pool2d(t, 1))
    x = tape.route(lambda t: t.flatten(1), _layer_norm_2d(tape, x, m.classifier[0]))
    return tape.linear(x, F.linear, m.classifier[2].weight, m.classifier[2].bias, *lin)


def _window_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """Shifted windows: entries of different regions of a window may not attend (-100)."""
    region = torch.zeros(size, size, dtype=torch.float64)
    cuts = ((0, -window), (-window, -shift), (-shift, None))
    for i, (h0, h1) in enumerate(cuts):
        for j, (w0, w1) in enumerate(cuts):
            region[h0:h1, w0:w1] = 3 * i + j
    n = size // window
    region = region.view(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, -1)
    diff = region[:, None, :] - region[:, :, None]
    return torch.where(diff != 0, -100.0, 0.0)  # (windows, window^2, window^2)


def swin_attention_reference(tape, at, x, lin, attention):
    """torchvision's shifted_window_attention (no padding: sizes are window multiples)."""
    n, size, _, c = x.shape
    window = at.window_size[0]
    shift = at.shift_size[0] if window < size else 0
    count = (size // window) ** 2

    def partition(t):
        t = torch.roll(t, (-shift, -shift), (1, 2)) if shift else t
        t = t.view(n, size // window, window, size // window, window, c)
        return t.permute(0, 1, 3, 2, 4, 5).reshape(n * count, window * window, c)

    def reverse(t):
        t = t.view(n, size // window, size // window, window, window, c)
        t = t.permute(0, 1, 3, 2, 4, 5).reshape(n, size, size, c)
        return torch.roll(t, (shift, shift), (1, 2)) if shift else t

    w = tape.route(partition, x)
    qkv = tape.linear(w, F.linear, at.qkv.weight, at.qkv.bias, *lin)
    q, k, v = (
        tape.route(lambda t, i=i: _heads(t.unflatten(-1, (3, -1))[:, :, i], at.num_heads), qkv)
        for i in range(3)
    )
    mask = at.get_relative_position_bias()  # (1, heads, window^2, window^2)
    if shift:
        windows = _window_mask(size, window, shift)[:, None]  # (windows, 1, ...)
        mask = (mask + windows).repeat(n, 1, 1, 1)
    out = tape.route(_merge, tape.attention(q, k, v, mask, (c // at.num_heads) ** -0.5,
                                            attention))  # fmt: skip
    out = tape.linear(out, F.linear, at.proj.weight, at.proj.bias, *lin)
    return tape.route(reverse, out)


def swin_reference(tape, m, x, first, lin, attention):
    """torchvision's Swin Transformer (V1): patch embedding, blocks, patch merging, head."""
    stem = m.features[0]
    h = tape.linear(x, _conv(stem[0]), stem[0].weight, stem[0].bias, *first)
    h = tape.layer_norm(tape.route(lambda t: t.permute(0, 2, 3, 1), h), stem[2])
    for stage in m.features[1:]:
        if hasattr(stage, "reduction"):  # patch merging: 2x2 neighbours side by side

            def merge(t):
                return torch.cat([t[:, 0::2, 0::2], t[:, 1::2, 0::2], t[:, 0::2, 1::2],
                                  t[:, 1::2, 1::2]], -1)  # fmt: skip

            h = tape.layer_norm(tape.route(merge, h), stage.norm)
            h = tape.linear(h, F.linear, stage.reduction.weight, None, *lin)
            continue
        for block in stage:
            a = swin_attention_reference(tape, block.attn, tape.layer_norm(h, block.norm1), lin,
                                         attention)  # fmt: skip
            h = tape.add(h, a)
            h = tape.add(h, _mlp(tape, [block.mlp[0], block.mlp[3]],
                                 tape.layer_norm(h, block.norm2), lin))  # fmt: skip
    h = tape.route(lambda t: t.permute(0, 3, 1, 2), tape.layer_norm(h, m.norm))
    h = tape.route(lambda t: t.flatten(1), tape.pool(h, lambda t: F.adaptive_avg_pool2d(t, 1)))
    return tape.linear(h, F.linear, m.head.weight, m.head.bias, *lin)


# -- models ------------------------------------------------------------------------------------


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random float64 parameters everywhere (biases, LayerNorm affines, class tokens and
    position embeddings too: fresh models start many of them at 0 or 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            if name.endswith("weight") and p.dim() == 1:  # LayerNorm scale
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    return model.double().eval()


def tv_vit(layers: int = 2) -> nn.Module:
    return randomize(torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=layers, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5,
    ))  # fmt: skip


def timm_vit() -> nn.Module:
    return randomize(timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2,
        num_classes=5, qkv_bias=True,
    ))  # fmt: skip


def convnext() -> nn.Module:
    blocks = [CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 1)]
    return randomize(ConvNeXt(blocks, num_classes=5))


def swin() -> nn.Module:
    return randomize(SwinTransformer(
        patch_size=[2, 2], embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=[2, 2],
        num_classes=5,
    ))  # fmt: skip


def images(n: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, dtype=torch.float64, generator=g) * 0.8 + 0.1


TARGET = torch.tensor([1, 3])
EPS = ("epsilon", 1e-6)
GAMMA = ("gamma", 0.25)
FLAT, ZPLUS = ("flat", 0.0), ("zplus", 0.0)
#: every linear layer on one rule, the default CP-LRP attention
EPSILON_CP = "epsilon"
EPSILON_ATTNLRP = "attnlrp"


# -- parity with the reference -------------------------------------------------------------------


@pytest.mark.parametrize(("composite", "attention"), [(EPSILON_CP, "cp"),
                                                      (EPSILON_ATTNLRP, "attnlrp")])  # fmt: skip
def test_torchvision_vit_matches_reference(composite, attention):
    m, x = tv_vit(), images()
    ref = explain(m, vit_reference, x, TARGET, first=EPS, lin=EPS, attention=attention)
    assert rel_err(lrp(m, x, TARGET, composite=composite), ref) <= TOL


def test_torchvision_vit_gamma_matches_reference():
    m, x = tv_vit(), images()
    ref = explain(m, vit_reference, x, TARGET, first=GAMMA, lin=GAMMA, attention="cp")
    assert rel_err(lrp(m, x, TARGET, composite="gamma"), ref) <= TOL


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(("composite", "attention"), [(EPSILON_CP, "cp"),
                                                      (EPSILON_ATTNLRP, "attnlrp")])  # fmt: skip
def test_timm_vit_matches_reference(composite, attention, fused):
    """timm's attention fused (F.scaled_dot_product_attention) and written out (softmax and
    matrix products inside the attention module) get the same rule."""
    m, x = timm_vit(), images()
    for block in m.blocks:
        block.attn.fused_attn = fused
    ref = explain(m, timm_vit_reference, x, TARGET, first=EPS, lin=EPS, attention=attention)
    assert rel_err(lrp(m, x, TARGET, composite=composite), ref) <= TOL


@pytest.mark.parametrize(("composite", "rules"), [
    ("epsilon_plus_flat", {"first": FLAT, "conv": ZPLUS, "lin": EPS}),
    ("gamma", {"first": GAMMA, "conv": GAMMA, "lin": GAMMA}),
])  # fmt: skip
def test_convnext_matches_reference(composite, rules):
    m, x = convnext(), images(size=32)
    ref = explain(m, convnext_reference, x, TARGET, **rules)
    assert rel_err(lrp(m, x, TARGET, composite=composite), ref) <= TOL


@pytest.mark.parametrize(("composite", "attention"), [(EPSILON_CP, "cp"),
                                                      (EPSILON_ATTNLRP, "attnlrp")])  # fmt: skip
def test_swin_matches_reference(composite, attention):
    """Shifted windows (roll, window partition, the -100 mask), relative position bias, patch
    merging and the functional F.linear projections."""
    m, x = swin(), images()
    ref = explain(m, swin_reference, x, TARGET, first=EPS, lin=EPS, attention=attention)
    assert rel_err(lrp(m, x, TARGET, composite=composite), ref) <= TOL


# -- conservation --------------------------------------------------------------------------------

#: LRP-0 in effect: stabilizers that cannot absorb relevance
TINY = Composite([((nn.Conv2d, nn.Linear), Epsilon(1e-30)),
                  ((nn.AdaptiveAvgPool2d,), Norm(1e-30))])  # fmt: skip


def _without_biases(model: nn.Module) -> nn.Module:
    """Every additive parameter zero (biases, LayerNorm shifts, position embeddings)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "pos_embed" in name:
                p.zero_()
    return model


@pytest.mark.parametrize("build", [
    lambda: timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5,
        class_token=False, global_pool="avg", qkv_bias=True),
    convnext, swin,
], ids=["timm_vit_avg", "convnext", "swin"])  # fmt: skip
def test_conservation_without_biases(build):
    """LRP-0 on the linear layers, CP-LRP attention (the mixing of values is a convex
    combination), the LayerNorm identity rule (without a shift, the centring keeps the sum),
    pass-through GELU, residual sums and pooling all conserve: the input relevance sums to the
    explained logit's 1. (A class token would keep a share: it is a constant input.)"""
    m = _without_biases(randomize(build()))
    x = images(size=32 if isinstance(m, ConvNeXt) else 16)
    r = lrp(m, x, TARGET, composite=TINY)
    torch.testing.assert_close(r.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64))


def test_attnlrp_does_not_conserve_across_softmax():
    """AttnLRP's softmax rule hands the logits ``x (R - s sum R)``, which does not sum to the
    attention's relevance: the same model as above loses (or gains) relevance under it."""
    m = _without_biases(randomize(timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5,
        class_token=False, global_pool="avg", qkv_bias=True)))  # fmt: skip
    attn = Composite([*TINY.layer_map[:2], (("timm.layers.attention.Attention",), AttnLRP())])
    sums = lrp(m, images(), TARGET, composite=attn).sum((1, 2, 3))
    assert (sums - 1).abs().min() > 1e-3


# -- differentiable mode -------------------------------------------------------------------------

#: AttnLRP with the flat input rule (finite differences need no near-zero input-layer output)
ATTNLRP_FLAT = Composite(
    [((nn.Conv2d, nn.Linear), Epsilon()), ((nn.MultiheadAttention,), AttnLRP())],
    [((nn.Conv2d,), Flat())],
)


def _fused_off(m: nn.Module) -> nn.Module:
    for block in m.blocks:
        block.attn.fused_attn = False
    return m


@pytest.mark.parametrize(("build", "composite"), [
    (tv_vit, "epsilon_plus_flat"), (tv_vit, ATTNLRP_FLAT), (timm_vit, "epsilon_plus_flat"),
    (lambda: _fused_off(timm_vit()), "epsilon_plus_flat"), (swin, "epsilon_plus_flat"),
    (convnext, "epsilon_plus_flat"),
], ids=["vit_cp", "vit_attnlrp", "timm_fused", "timm_unfused", "swin", "convnext"])  # fmt: skip
def test_differentiable_mode_matches_finite_differences(build, composite):
    """A loss on the relevance differentiates through the model's true Jacobians: attention
    weights and LayerNorm scales are constants for the rules, not for the derivative. The plain
    pass (detached constants, the fused LayerNorm and attention kernels) gives the same
    relevance."""
    m = build()
    x0 = images(size=32 if isinstance(m, ConvNeXt) else 16)
    g = torch.Generator().manual_seed(7)
    w, v = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)

    def loss(x, create_graph=False):
        r = lrp(m, x, TARGET, composite=composite, create_graph=create_graph, check_range=False)
        return (r * w).sum() + (r**2).sum(), r

    x = x0.clone().requires_grad_()
    value, r = loss(x, True)
    (grad,) = torch.autograd.grad(value, x)
    h = 1e-6
    fd = (loss(x0 + h * v)[0] - loss(x0 - h * v)[0]) / (2 * h)
    torch.testing.assert_close((grad * v).sum(), fd, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(r.detach(), lrp(m, x0, TARGET, composite=composite),
                               rtol=1e-12, atol=1e-15)  # fmt: skip


def test_relevance_term_of_an_induced_vit_is_differentiable():
    """LRPC/LRPF's relevance term: stage_relevance of an induced C2F over a ViT, fine stage.
    (The coarse stage's seed, the members' softmax share, enters as a constant.)"""
    h = Hierarchy.from_dict({"a": ["a1", "a2"], "b": ["b1", "b2", "b3"]})
    model = InducedC2F(tv_vit(), h, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25)).double()
    x0, v = images(), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    for stage in ("fine",):
        t = getattr(model(x0), f"{stage}_pred")

        def loss(x, create_graph=False, stage=stage, t=t):
            r = stage_relevance(model, x, stage, t, create_graph=create_graph, check_range=False)
            return (r[:, :, 4:12, 4:12] ** 2).sum()

        x = x0.clone().requires_grad_()
        (g,) = torch.autograd.grad(loss(x, True), x)
        fd = (loss(x0 + 1e-6 * v) - loss(x0 - 1e-6 * v)) / 2e-6
        torch.testing.assert_close((g * v).sum(), fd, rtol=1e-5, atol=1e-9)


# -- the model check and bad input -----------------------------------------------------------------


class Counting(nn.Module):
    """Counts forward calls of the wrapped model (a check must fail before the first one)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_multihead_attention_with_extra_key_rows_refused_by_name():
    m = tv_vit()
    block = m.encoder.layers[1]
    block.self_attention = nn.MultiheadAttention(16, 2, add_bias_kv=True, batch_first=True)
    wrapped = Counting(m)
    with pytest.raises(UserError, match=r"'inner\.encoder\.layers\.encoder_layer_1\."
                                        r"self_attention' .*add_bias_kv"):  # fmt: skip
        lrp(wrapped, images(), 1)
    assert wrapped.calls == 0


def test_layer_norm_with_an_unknown_forward_refused_by_name():
    class RMSLike(nn.LayerNorm):
        def forward(self, x):
            return x / x.square().mean(-1, keepdim=True).sqrt() * self.weight

    m = tv_vit()
    m.encoder.ln = RMSLike(16)
    with pytest.raises(UserError, match=r"'encoder\.ln' \(.*RMSLike\).*RMSLike\.forward"):
        check_explainable(m)


def test_composite_without_a_rule_for_a_layer_type_refused_before_the_first_pass():
    wrapped = Counting(tv_vit())
    convs_only = Composite([((nn.Conv2d,), Epsilon())])
    with pytest.raises(
        UserError,
        match=r"'inner\.encoder\.layers\.encoder_layer_0\."
        r"self_attention' .*no rule for its linear projections",
    ):
        lrp(wrapped, images(), 1, composite=convs_only)
    mlp_only = Composite(
        [((nn.Conv2d,), Epsilon()), ((nn.MultiheadAttention,), CPAttention(projections=Epsilon()))]
    )
    with pytest.raises(
        UserError,
        match=r"'inner\.encoder\.layers\.encoder_layer_0\.mlp\.0' "
        r"\(torch\.nn\.modules\.linear\.Linear\).*no rule",
    ):
        lrp(wrapped, images(), 1, composite=mlp_only)
    assert wrapped.calls == 0


class Bilinear(nn.Module):
    """A product of two activations outside any attention module."""

    def __init__(self, attend: bool):
        super().__init__()
        self.attend = attend
        self.embed, self.head = nn.Linear(3, 16), nn.Linear(16, 5)

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2))  # (N, 4, 16)
        t = F.scaled_dot_product_attention(t, t, t) if self.attend else t @ t.transpose(1, 2) @ t
        return self.head(t.mean(1))


@pytest.mark.parametrize(("attend", "message"), [
    (False, "matmul of two activations outside an attention module"),
    (True, "F.scaled_dot_product_attention ran outside every module the composite gives an "
           "attention rule"),
])  # fmt: skip
def test_attention_outside_a_known_module_refused(attend, message):
    with pytest.raises(NotImplementedError, match=message):
        lrp(Bilinear(attend).double(), images(size=2), 1)


def test_a_composite_can_name_an_attention_module():
    """A custom module computing attention gets the rule its type is named with."""
    m = Bilinear(True).double()
    comp = Composite([((nn.Linear,), Epsilon()), ((Bilinear,), CPAttention())])
    r = lrp(m, images(size=2), 1, composite=comp)
    assert r.shape == (2, 3, 2, 2) and r.abs().sum() > 0


@pytest.mark.parametrize("where", ["first", "inside", "last"])
def test_identities_accepted_wherever_they_sit(where):
    """Empty ``nn.Sequential`` containers (torchvision's ShuffleNet has them) and
    ``nn.Identity`` are identities: the relevance is that of the model without them."""

    def body(*extra_first, extra_mid=(), extra_last=()):
        torch.manual_seed(0)
        return nn.Sequential(*extra_first, nn.Conv2d(3, 4, 3), nn.ReLU(), *extra_mid,
                             nn.Flatten(), nn.Linear(64, 5), *extra_last).double()  # fmt: skip

    ids = (nn.Sequential(), nn.Identity(), nn.Sequential(nn.Sequential()))
    spot = {"first": {}, "inside": {"extra_mid": ids}, "last": {"extra_last": ids}}[where]
    m = body(*ids, **{}) if where == "first" else body(**spot)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(lrp(m, x, 1), lrp(body(), x, 1), rtol=0, atol=0)


# -- LRPC and LRPF on transformers from the command line -------------------------------------------


def test_every_attack_and_mask_runs_on_induced_transformers(tmp_path):
    """``c2f-bench run --model c2f_attacks.models.transformers:vit ...:convnext --hierarchy
    JSON``: induced C2F models over a random-weight ViT and ConvNeXt, every attack, LRPC and
    LRPF with the LRP mask, at smoke size (one image, one step). The other mask sources are
    gradients, the same LRP pass or model-free."""
    hierarchy = SHAPES_HIERARCHY.to_json(tmp_path / "shapes.json")
    models = [f"c2f_attacks.models.transformers:{name}" for name in ("vit", "convnext")]
    masks = ("lrp",)
    args = ["run", "--model", *models, "--hierarchy", str(hierarchy), "-n", "1",
            "--batch-size", "1", "--attacks", "fgsm,pgd,lrpc,lrpf", "--masks", ",".join(masks),
            "--protocol", "fixed", "--eps", "0.03", "--set", "steps=1", "refresh=1", "pgd.steps=1",
            "--no-figures", "--quiet", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 0
    board = pd.read_csv(tmp_path / "o" / "leaderboard.csv")
    lrp_attacks = {("lrpc", m, "coarse") for m in masks} | {("lrpf", m, "fine") for m in masks}
    for model in models:
        rows = board[board.model == model]
        assert lrp_attacks <= set(zip(rows.attack, rows["mask"], rows.stage))
        assert {"fgsm", "pgd"} <= set(rows.attack) and (rows.n == 1).all()
