"""Errors raised by the exporters package."""

from __future__ import annotations


class OnnxModelError(ValueError):
    """An ONNX file is corrupt, unloadable, or its inputs/outputs are not a C2F graph's."""


class ParityError(ValueError):
    """The exported graph does not reproduce the PyTorch model; nothing was written."""


class ProviderUnavailableError(RuntimeError):
    """An execution provider that was asked for explicitly could not be loaded."""
