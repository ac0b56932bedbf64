"""Coarse-to-fine classifiers: the interface, C2F-VGG16, induced C2F, and the model zoo."""

from c2f_attacks.models.base import C2FClassifier, C2FOutput, Normalize
from c2f_attacks.models.induced import InducedC2F
from c2f_attacks.models.torchvision_vgg import induced_torchvision_vgg16
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig
from c2f_attacks.models.zoo import (
    CheckpointError,
    list_models,
    load_checkpoint,
    load_model,
    register_model,
    save_checkpoint,
)

__all__ = [
    "C2FClassifier", "C2FOutput", "C2FVGG16", "CheckpointError", "InducedC2F", "Normalize",
    "VGGConfig", "induced_torchvision_vgg16", "list_models",
    "load_checkpoint", "load_model", "register_model", "save_checkpoint",
]  # fmt: skip
