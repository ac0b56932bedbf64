"""Set-up shared by tests/ and bench/: the threads of pytest-xdist's workers.

The workers share the machine's cores, so each takes its share of them, for itself and for the
processes its tests start (a worker with every core would oversubscribe them).
"""

from __future__ import annotations

import os

import torch

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _workers > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _threads = max(1, (_cores or 1) // _workers)
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)
