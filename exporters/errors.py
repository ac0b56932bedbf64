"""Errors raised by the exporters package: each is a
:class:`~c2f_attacks.errors.UserError` (a file, a model or an environment the user can fix)."""

from __future__ import annotations

from c2f_attacks.errors import UserError


class OnnxModelError(UserError):
    """An ONNX file is corrupt, unloadable, or its inputs/outputs are not a C2F graph's."""


class ParityError(UserError):
    """The exported graph does not reproduce the PyTorch model; nothing was written."""


class ProviderUnavailableError(UserError, RuntimeError):
    """An execution provider that was asked for explicitly could not be loaded."""
