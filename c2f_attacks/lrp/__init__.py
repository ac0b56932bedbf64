"""Layer-wise Relevance Propagation for flat and coarse-to-fine classifiers.

``lrp(module, x, target)`` explains a flat classifier, ``stage_relevance(model, x, stage)`` one
stage of a C2F model. One forward and one backward pass per batch (gradient-times-input form);
``create_graph=True`` makes the relevance differentiable. See ``rules`` for the formulas.
"""

from c2f_attacks.lrp.canonizers import find_conv_bn_pairs, merged_parameters
from c2f_attacks.lrp.composites import (
    COMPOSITES,
    Composite,
    epsilon,
    epsilon_alpha2_beta1_flat,
    epsilon_plus_box,
    epsilon_plus_flat,
    get_composite,
)
from c2f_attacks.lrp.engine import check_explainable, lrp, stage_relevance
from c2f_attacks.lrp.rules import AlphaBeta, Epsilon, Flat, Norm, Pass, Rule, ZBox, ZPlus

__all__ = [
    "COMPOSITES", "AlphaBeta", "Composite", "Epsilon", "Flat", "Norm", "Pass", "Rule", "ZBox",
    "ZPlus", "check_explainable", "epsilon", "epsilon_alpha2_beta1_flat", "epsilon_plus_box",
    "epsilon_plus_flat", "find_conv_bn_pairs", "get_composite", "lrp", "merged_parameters",
    "stage_relevance",
]  # fmt: skip
