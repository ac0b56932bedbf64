"""Model registry (timm-style): names that build C2F classifiers with one call, and checkpoints.

A checkpoint is a ``torch.save`` dict that carries its architecture config and hierarchy, so
``load_model(path)`` needs nothing else; it is validated on load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

from c2f_attacks._io import atomic_write
from c2f_attacks.hierarchy import Hierarchy
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.models.torchvision_vgg import induced_torchvision_vgg16
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig

CHECKPOINT_FORMAT = "c2f-attacks/checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a valid c2f-attacks checkpoint."""


_REGISTRY: dict[str, Callable[[], C2FClassifier]] = {}


def register_model(name: str):
    """Decorator: register a zero-argument builder under ``name``."""

    def wrap(fn: Callable[[], C2FClassifier]):
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def load_model(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """A ready C2F classifier (eval mode) from a registered name or a checkpoint path."""
    key = str(name_or_path)
    if key in _REGISTRY:
        model = _REGISTRY[key]()
    elif Path(key).exists() or os.sep in key or key.endswith(".pt"):
        model = load_checkpoint(key, map_location=map_location)
    else:
        raise ValueError(
            f"unknown model {key!r}: not a registered name ({', '.join(list_models())}) "
            "and no file at that path"
        )
    return model.to(map_location).eval()


# ------------------------------------------------------------------------ checkpoints
_ARCHS: dict[str, Callable[[Hierarchy, dict], C2FClassifier]] = {
    "c2f_vgg16": lambda h, cfg: C2FVGG16(h, VGGConfig.from_dict(cfg)),
}


def _arch_of(model: C2FClassifier) -> tuple[str, dict]:
    if isinstance(model, C2FVGG16):
        return "c2f_vgg16", model.cfg.to_dict()
    raise TypeError(
        f"cannot checkpoint a {type(model).__name__}: only C2FVGG16 models are built from "
        "checkpoints (induced models are rebuilt from their flat model's weights)"
    )


def save_checkpoint(model: C2FClassifier, path: str | os.PathLike, meta: dict | None = None):
    """Write ``model`` with its architecture, hierarchy and ``meta`` (atomically)."""
    arch, cfg = _arch_of(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "config": cfg,
        "hierarchy": model.hierarchy.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and validate the checkpoint dict (without building the model)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, pickle errors, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated, corrupt or not a torch file): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a c2f-attacks checkpoint (no 'format': {CHECKPOINT_FORMAT!r} field; "
            "a plain state_dict must be loaded into a model you build yourself)"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {payload.get('version')!r}; "
            f"this library reads version {CHECKPOINT_VERSION}"
        )
    for field, kind in (("arch", str), ("config", dict), ("hierarchy", dict), ("state_dict", dict)):
        if not isinstance(payload.get(field), kind):
            raise CheckpointError(
                f"checkpoint {path}: field {field!r} is missing or not a {kind.__name__}"
            )
    if payload["arch"] not in _ARCHS:
        raise CheckpointError(
            f"checkpoint {path}: unknown arch {payload['arch']!r} (known: {', '.join(_ARCHS)})"
        )
    return payload


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> C2FClassifier:
    payload = read_checkpoint(path, map_location)
    try:
        hierarchy = Hierarchy.from_dict(payload["hierarchy"])
        model = _ARCHS[payload["arch"]](hierarchy, payload["config"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    missing, unexpected = _diff_keys(model.state_dict(), payload["state_dict"])
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: {str(err).splitlines()[-1].strip()}") from None
    model.checkpoint_meta = payload["meta"]
    return model.eval()


def _diff_keys(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))


# ------------------------------------------------------------------------ registered names
def shipped_checkpoint(name: str) -> Path:
    return Path(str(resources.files("c2f_attacks.checkpoints") / f"{name}.pt"))


@register_model("shapes-vgg16")
def shapes_vgg16() -> C2FClassifier:
    """C2F-VGG16 trained on the procedural shapes data; shipped (``c2f-bench train`` made it)."""
    return load_checkpoint(shipped_checkpoint("shapes-vgg16"))


@register_model("imagenet-vgg16")
def imagenet_vgg16() -> C2FClassifier:
    """torchvision VGG-16 IMAGENET1K_V1 induced through the shipped ImageNet superclasses."""
    return induced_torchvision_vgg16("IMAGENET1K_V1")


@register_model("imagenet-vgg16-bn")
def imagenet_vgg16_bn() -> C2FClassifier:
    """torchvision VGG-16-BN IMAGENET1K_V1 induced through the shipped ImageNet superclasses."""
    return induced_torchvision_vgg16("IMAGENET1K_V1", batch_norm=True)
