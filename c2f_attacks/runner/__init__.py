"""The benchmark job behind ``c2f-bench run``.

:mod:`~c2f_attacks.runner.plan` says what a run does (:class:`RunConfig`, :class:`Plan`, config
files and sweeps), :mod:`~c2f_attacks.runner.preflight` checks everything before the first
attack, :mod:`~c2f_attacks.runner.execute` runs it, :mod:`~c2f_attacks.runner.distributed`
shards it over ``torchrun`` processes and :mod:`~c2f_attacks.runner.backends` evaluates it in
onnxruntime as well.
"""

from c2f_attacks.runner.execute import FigureWarning, model_hash, run
from c2f_attacks.runner.plan import (
    ATTACKS,
    BACKENDS,
    DEFAULT_MASKS,
    MODES,
    STAGES,
    Plan,
    RunConfig,
    expand,
    read_config,
)
from c2f_attacks.runner.preflight import MAX_IMAGES

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "DEFAULT_MASKS",
    "MAX_IMAGES",
    "MODES",
    "STAGES",
    "FigureWarning",
    "Plan",
    "RunConfig",
    "expand",
    "model_hash",
    "read_config",
    "run",
]
