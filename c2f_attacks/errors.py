"""The error types that say "your input is wrong", as opposed to "the library is wrong".

:class:`UserError` is raised where input is checked (options, config files, datasets, models and
checkpoints, hierarchies, leaderboards and records, attack settings, ONNX files): its message
names the input (file, field, line, option, value) and what would be valid. It is a
``ValueError``, so callers that catch ``ValueError`` keep working. ``c2f-bench`` reports a
UserError in one line with exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input that the user can fix; the message says which input and why."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it
    (``pip install 'c2f-attacks[EXTRA]'``). Also an ImportError, for callers that catch one."""
