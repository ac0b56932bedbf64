"""LXT (AttnLRP's reference implementation, PyPI ``lxt``) as the oracle for torchvision's ViT.

LXT's efficient mode patches torchvision's module classes process-wide (GELU, LayerNorm,
MultiheadAttention) and Zennit's hooks, so it runs in a subprocess: this file run as a script
computes LXT's relevance for a saved model and input. One subprocess serves every comparison.

What LXT computes for ``vision_transformer`` (its ``cp_LRP`` map): CP-LRP attention (queries
and keys detached), the LayerNorm with its standard deviation detached, GELU by the identity
rule, and the Zennit rule on every Conv2d/Linear *module* called. ``nn.MultiheadAttention``
computes its projections functionally, so LXT leaves them on the plain gradient (LRP-0): the
composite mirroring LXT says so with ``CPAttention(projections=Epsilon(0.0))``. LXT seeds the
backward with the gradient 1 at the logit, i.e. relevance = the logit (our ``init="logit"``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from c2f_attacks.lrp import Composite, CPAttention, Epsilon, Gamma, lrp
from tests.test_lrp_transformers import randomize, rel_err

ROOT = Path(__file__).resolve().parent.parent
#: a vit_b_16-shaped encoder (12 blocks) at a test-sized width
CONFIG = {"image_size": 32, "patch_size": 8, "num_layers": 12, "num_heads": 4,
          "hidden_dim": 64, "mlp_dim": 256, "num_classes": 10}  # fmt: skip
#: the Zennit rule LXT puts on every Conv2d/Linear module, by name
ZENNIT_RULES = {"epsilon": ("Epsilon", {"epsilon": 1e-6}), "gamma": ("Gamma", {"gamma": 0.25})}


def build(config: dict) -> nn.Module:
    return torchvision.models.VisionTransformer(**config).double().eval()


if importlib.util.find_spec("lxt") is None:
    # The test extra installs LXT; CI must never pass without the oracle.
    if os.environ.get("CI"):
        raise ImportError("the LXT oracle needs `pip install -e .[test]` (package lxt)")
    pytest.skip("LXT is not installed (pip install -e .[test])", allow_module_level=True)

#: our rules for LXT's: the same rule on conv and linear layers, LRP-0 on the attention's
#: functional projections
OURS = {"epsilon": Epsilon(1e-6), "gamma": Gamma(0.25)}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """(model, x, target, {rule: LXT's relevance}), LXT run once in a subprocess."""
    model = randomize(build(CONFIG), seed=3)
    g = torch.Generator().manual_seed(4)
    # pixels away from 0: LXT divides relevance by the input (stabilized by 1e-10)
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=g) * 0.8 + 0.1
    target = torch.tensor([1, 4, 7])
    path = tmp_path_factory.mktemp("lxt") / "case.pt"
    torch.save({"config": CONFIG, "state": model.state_dict(), "x": x, "target": target}, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return model, x, target, torch.load(path.with_suffix(".lxt.pt"))


@pytest.mark.parametrize("rule", list(ZENNIT_RULES))
def test_vit_matches_lxt(case, rule):
    model, x, target, lxt = case
    composite = Composite([
        ((nn.Conv2d, nn.Linear), OURS[rule]),
        ((nn.MultiheadAttention,), CPAttention(projections=Epsilon(0.0))),
    ])  # fmt: skip
    ours = lrp(model, x, target, composite=composite, init="logit")
    ref = lxt[rule]
    # measured: 4e-8 (epsilon) and 7e-9 (gamma), from LXT's own 1e-10 stabilizers
    assert rel_err(ours, ref) <= 1e-6
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-6


def lxt_oracle(path: Path) -> None:
    """LXT's relevance for every rule in ZENNIT_RULES, saved next to ``path``."""
    import zennit.rules
    from lxt.efficient import monkey_patch, monkey_patch_zennit
    from torchvision.models import vision_transformer
    from zennit.composites import LayerMapComposite

    monkey_patch(vision_transformer)
    monkey_patch_zennit()
    data = torch.load(path)
    model = build(data["config"])
    model.load_state_dict(data["state"])
    out = {}
    for name, (rule, kwargs) in ZENNIT_RULES.items():
        composite = LayerMapComposite(
            [(nn.Conv2d, getattr(zennit.rules, rule)(**kwargs)),
             (nn.Linear, getattr(zennit.rules, rule)(**kwargs))]
        )  # fmt: skip
        x = data["x"].clone().requires_grad_()
        with composite.context(model):
            logits = model(x)
            logits.backward(F.one_hot(data["target"], logits.shape[1]).to(logits.dtype))
        out[name] = (x * x.grad).detach()
    torch.save(out, path.with_suffix(".lxt.pt"))


if __name__ == "__main__":
    lxt_oracle(Path(sys.argv[1]))
