"""Layer-wise Relevance Propagation for flat and coarse-to-fine classifiers.

``lrp(module, x, target)`` explains a flat classifier, ``stage_relevance(model, x, stage)`` one
stage of a C2F model. One forward and one backward pass per batch (gradient-times-input form);
``create_graph=True`` makes the relevance differentiable. See ``rules`` for the formulas,
``canonizers`` for BatchNorm folding and squeeze-excitation gates, ``layers`` for the supported
layer types and ``check_explainable`` for the model check every entry point runs.
"""

from c2f_attacks.lrp.canonizers import SqueezeExcitation, fold_batchnorm
from c2f_attacks.lrp.check import check_explainable
from c2f_attacks.lrp.composites import (
    COMPOSITES,
    Composite,
    epsilon,
    epsilon_alpha2_beta1_flat,
    epsilon_gamma_box,
    epsilon_plus_box,
    epsilon_plus_flat,
    get_composite,
)
from c2f_attacks.lrp.engine import lrp, stage_relevance
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
    "COMPOSITES", "AlphaBeta", "Composite", "Epsilon", "Flat", "Gamma", "Norm", "Pass", "Rule",
    "SqueezeExcitation", "ZBox", "ZPlus", "check_explainable", "epsilon",
    "epsilon_alpha2_beta1_flat", "epsilon_gamma_box", "epsilon_plus_box", "epsilon_plus_flat",
    "fold_batchnorm", "get_composite", "lrp", "stage_relevance",
]  # fmt: skip
