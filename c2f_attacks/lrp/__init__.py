"""Layer-wise Relevance Propagation for flat and coarse-to-fine classifiers.

``lrp(module, x, target)`` explains a flat classifier, ``stage_relevance(model, x, stage)`` one
stage of a C2F model. One forward and one backward pass per batch (gradient-times-input form);
``create_graph=True`` makes the relevance differentiable. See ``rules`` for the formulas,
``canonizers`` for BatchNorm folding and squeeze-excitation gates, ``normalization`` and
``attention`` for LayerNorm and softmax attention (transformers), ``layers`` for the supported
layer types and ``check_explainable`` for the model check every entry point runs.
"""

from c2f_attacks.lrp.attention import AttentionRule, AttnLRP, CPAttention
from c2f_attacks.lrp.canonizers import SqueezeExcitation, fold_batchnorm
from c2f_attacks.lrp.check import check_explainable
from c2f_attacks.lrp.composites import (
    COMPOSITES,
    DEFAULT_COMPOSITE,
    Composite,
    attnlrp,
    epsilon,
    epsilon_alpha2_beta1_flat,
    epsilon_gamma_box,
    epsilon_plus_box,
    epsilon_plus_flat,
    gamma,
    get_composite,
    register_composite,
)
from c2f_attacks.lrp.engine import lrp, stage_relevance
from c2f_attacks.lrp.normalization import ConstantStd
from c2f_attacks.lrp.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    Rule,
    ZBox,
    ZPlus,
)

__all__ = [
    "COMPOSITES", "DEFAULT_COMPOSITE", "AlphaBeta", "AttentionRule", "AttnLRP", "CPAttention",
    "Composite", "ConstantStd", "Epsilon", "Flat", "Gamma", "Norm", "Pass", "Rule",
    "SqueezeExcitation", "ZBox", "ZPlus", "attnlrp", "check_explainable", "epsilon",
    "epsilon_alpha2_beta1_flat", "epsilon_gamma_box", "epsilon_plus_box", "epsilon_plus_flat",
    "fold_batchnorm", "gamma", "get_composite", "lrp", "register_composite", "stage_relevance",
]  # fmt: skip
