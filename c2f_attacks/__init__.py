"""c2f-attacks: explainable adversarial attacks (LRPC, LRPF) on coarse-to-fine classifiers."""

from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models import C2FClassifier, C2FOutput, list_models, load_model

__version__ = "0.1.0"
__all__ = ["C2FClassifier", "C2FOutput", "Hierarchy", "list_models", "load_model", "__version__"]
