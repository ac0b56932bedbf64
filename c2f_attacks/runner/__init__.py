"""The benchmark job behind ``c2f-bench run``.

:mod:`~c2f_attacks.runner.plan` says what a run does (:class:`RunConfig`, :class:`Plan`, config
files and sweeps), :mod:`~c2f_attacks.runner.preflight` checks everything before the first
attack, :mod:`~c2f_attacks.runner.execute` runs it, :mod:`~c2f_attacks.runner.distributed`
shards it over ``torchrun`` processes and :mod:`~c2f_attacks.runner.backends` evaluates it in
onnxruntime as well. :mod:`~c2f_attacks.runner.transfer` (``c2f-bench transfer``) evaluates a
run's saved adversarial images on other models and deployment variants.
"""

from c2f_attacks.runner.execute import FigureWarning, figure_folder, model_hash, run, run_all
from c2f_attacks.runner.plan import (
    ATTACKS,
    BACKENDS,
    DEFAULT_MASKS,
    DEFAULT_MODELS,
    DEFAULT_PROTOCOLS,
    DEFAULT_RUN,
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
    "DEFAULT_MODELS",
    "MAX_IMAGES",
    "DEFAULT_PROTOCOLS",
    "DEFAULT_RUN",
    "STAGES",
    "FigureWarning",
    "Plan",
    "RunConfig",
    "expand",
    "figure_folder",
    "model_hash",
    "read_config",
    "run",
    "run_all",
]
