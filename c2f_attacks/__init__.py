"""c2f-attacks: explainable adversarial attacks (LRPC, LRPF) on coarse-to-fine classifiers.

The names most users need are re-exported here; each lives in its own subpackage
(``models``, ``lrp``, ``attacks``, ``evaluation``).
"""

from c2f_attacks.attacks import FGSM, LRPC, LRPF, PGD
from c2f_attacks.evaluation import load_records, load_transfer_records
from c2f_attacks.hierarchies import get_hierarchy, list_hierarchies
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.lrp import lrp, stage_relevance
from c2f_attacks.models import C2FClassifier, C2FOutput, InducedC2F, list_models, load_model

__version__ = "0.1.0"
__all__ = [
    "FGSM",
    "LRPC",
    "LRPF",
    "PGD",
    "C2FClassifier",
    "C2FOutput",
    "Hierarchy",
    "InducedC2F",
    "__version__",
    "get_hierarchy",
    "list_hierarchies",
    "list_models",
    "load_model",
    "load_records",
    "load_transfer_records",
    "lrp",
    "stage_relevance",
]
