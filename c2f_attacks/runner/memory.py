"""Batch sizes sized to the machine: the ``--max-memory`` budget and each row's cost per image.

**Budget.** ``--max-memory SIZE`` (``4G``, ``512M``, ``1.5GiB``, or bytes) bounds the peak
memory of the run, per process: the process' resident memory on CPU, the device memory
allocated by PyTorch on CUDA. Without it the budget is :data:`CPU_SHARE` of the memory available
when the run starts (``MemAvailable``: free memory plus what the kernel can reclaim; split
between the ranks of one machine), or :data:`CUDA_SHARE` of the GPU's free memory: a safe share
on a machine that other programs use too.

**Cost.** Each row's cost per image is *measured*, not estimated from the model's size: the
memory of an attack depends on the architecture (activation sizes, depthwise and squeeze-
excitation blocks), the attack (a differentiable LRP pass keeps several times the activations
of a gradient) and the input size in ways no formula on parameter counts captures, while one
measurement captures all of them. The row's whole per-batch step (attack, per-image records
with their LRP maps, the compaction of the adversarial images) runs on one probe image with the
attack's iteration counts cut to two (every iteration allocates what the first does; a mask
refresh is included), under a tracker of the memory PyTorch allocates: the CUDA allocator's
peak, or on CPU the peak of the live tensor storages the probe creates, seen by a
:class:`~torch.utils._python_dispatch.TorchDispatchMode`. The probe's results are discarded.

**Batch size.** With ``held`` the memory the process holds before attacking (libraries, model,
data: resident memory on CPU, allocated memory on CUDA) and ``cost`` the probe's peak times
:data:`SAFETY` (allocator overhead and kernel scratch space the tracker does not see):
``batch = min(cap, floor((budget - held) / cost))``, with ``cap`` :data:`DEFAULT_BATCH_SIZE`.
A budget below ``held + cost`` is refused before any attack, naming the figure needed. An
explicit ``--batch-size`` wins (nothing is measured unless ``--max-memory`` is also given; then a
batch that does not fit is refused). The probe costs the peak of one image per row, which
includes per-batch constants: an upper bound, so batches are rather too small than too large.

Batch sizes change no decision (success, predictions, norms, budgets, queries: the attacks draw
their noise per image, :mod:`~c2f_attacks.attacks.noise`); LRP maps computed for one image can
differ from those computed in a batch in the last float32 bit (other kernels), which moves
``relevance_shift`` by about 1e-7. A resumed run keeps the batch sizes of the interrupted one.

**Freed memory goes back.** glibc's allocator keeps the heap pages a batch freed for later
requests; after the first large block is freed it raises its mmap threshold (up to 32 MB), so
the batches' tensors then come from the heap, whose free pages fragment and stay resident. Without
help the resident memory of a long run creeps up with every batch although nothing stays alive.
:func:`hand_back_freed_memory`, called once when a run starts, fixes the threshold at
:data:`MMAP_THRESHOLD` (larger blocks are mapped and unmapped on their own), and
:func:`release_freed_memory`, called after every batch, trims what the heap holds free
(``malloc_trim``). Both are no-ops where the C library is not glibc.

The threshold trades memory for time: every mapped block is faulted in and zeroed page by page
when a tensor is allocated, work the heap's reused pages do not cost. Measured on 2 cores (Intel
Xeon), peak RSS and wall time of real runs, glibc's own adaptive threshold against fixed ones:

=================================================  ==============  ==============  ============
run                                                adaptive        4 MiB           128 KiB
=================================================  ==============  ==============  ============
one FGSM row, shapes-vgg16, n = 64 -> 2,048        +23 MB, 20 s    +9 MB, 20 s     +2 MB, 26 s
the default ``c2f-bench run`` (48 rows, n = 16)    1.10 GB, 53 s   1.09 GB, 52 s   1.08 GB, 86 s
the 224-px photo run (EfficientNet-Lite0, n = 6)   3.47 GB, 181 s  2.82 GB, 234 s  2.26 GB, 366 s
=================================================  ==============  ==============  ============

4 MiB keeps small and medium tensors on the heap (all of a batch of 16 images at 32 px) and maps
the large ones (224-px activations), whose fragments cost the most memory. (The last two rows
were measured before the LRP engine stopped leaving reference cycles; at 4 MiB the photo run
now peaks at 2.18 GB, ``results/memory/memory.md``.)

**Compiled kernels stay.** oneDNN compiles a kernel for every operation and shape it runs on
the CPU and keeps the latest :data:`ONEDNN_DEFAULT_CACHE` in a cache. Early stopping and the
minimal protocol's bisection attack sub-batches of every size from one image to the batch size,
so a run needs many more kernels than it has layers: the eight coarse-stage rows of the default
attacks on shapes-vgg16 compile 1,317 kernels on 1,024 images (a count bounded by the batch size,
the layers and the passes, not by the number of images). With the default cache they were
evicted and compiled again batch after batch, and the evicted kernels, freed amid the batches'
tensors, fragmented the heap, so that each batch peaked higher than the last. A ``c2f-bench``
process keeps up to :data:`KERNEL_CACHE_CAPACITY` kernels instead
(:func:`keep_compiled_kernels`). Peak RSS (MB) and time of one row, LRPC with the lrp mask
under the minimal protocol on the coarse stage, batch 64, on 2 cores (Intel Xeon):

=========================  =======  ========  =========  ==================
cache (kernels)            n = 64   n = 256   n = 1024   time at n = 256
=========================  =======  ========  =========  ==================
1,024 (oneDNN's default)   1,067    1,166     1,226      36.0 s
8,192 (a c2f-bench run)    1,072    1,089     1,095      34.8 s
256                        1,070    1,085     1,135      37.5 s
0 (no cache)               1,033    1,039     1,047      45.8 s
=========================  =======  ========  =========  ==================

At n = 1,024 the row took 138 s with oneDNN's default and 122 s with 8,192.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import os
import re
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from c2f_attacks.errors import UserError

#: allocations from this size on are mapped on their own (the trade-off: module docstring)
MMAP_THRESHOLD = 4 * 2**20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc has both)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None
    return libc


def hand_back_freed_memory() -> None:
    """Keep large blocks out of the heap from now on (module docstring)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


#: oneDNN's primitive cache in a ``c2f-bench`` process: room for every kernel a run compiles
#: (module docstring); the runs measured there hold about 40 kB per kernel
KERNEL_CACHE_CAPACITY = 8192
#: oneDNN's own default capacity
ONEDNN_DEFAULT_CACHE = 1024


def keep_compiled_kernels() -> None:
    """Let oneDNN keep up to :data:`KERNEL_CACHE_CAPACITY` compiled kernels (module docstring).

    oneDNN reads ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` once, when the process creates its first
    kernel: call this before any CPU operator runs. A capacity the user set is kept."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(KERNEL_CACHE_CAPACITY))


def release_freed_memory() -> None:
    """Return the heap pages freed so far to the operating system (module docstring)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


#: the batch size when nothing else limits it (and the largest one chosen automatically)
DEFAULT_BATCH_SIZE = 64
#: share of the available memory that the default budget takes (CPU; CUDA: of free memory)
CPU_SHARE, CUDA_SHARE = 0.5, 0.8
#: measured tensor peak -> memory budgeted per image (allocator overhead, untracked scratch)
SAFETY = 1.5
#: per image, this many times one forward pass' activations bounds every attack's batch step
#: (the largest ratio measured: LRPC on shapes-vgg16, 13; on EfficientNet-Lite0 at 224 px, 4)
ACTIVATION_BOUND = 20
#: iteration settings cut for the probe, to the value given (what the iterations allocate is
#: the same in each; the mask refresh of the LRP-guided attacks included)
PROBE_SETTINGS = {"steps": 2, "search_steps": 1, "refresh": 1}

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes of ``4G``, ``512M``, ``1.5GiB``, ``800k`` or a plain number of bytes (powers of
    1024); ValueError naming the text otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise UserError(f"--max-memory {text!r} is not a size (examples: 4G, 512M, 1.5GiB)")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise UserError(f"--max-memory must be positive, got {text!r}")
    return size


def format_size(size: float) -> str:
    """``1.23 GB``-style text (powers of 1024), as the budget messages print it."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size / 2**10:.0f} kB"


def resident_bytes() -> int:
    """The process' resident memory now (Linux: /proc; elsewhere its peak, an upper bound)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def available_bytes() -> int:
    """Memory available to a new program: MemAvailable on Linux, physical memory elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget(device: torch.device) -> int:
    """The budget without ``--max-memory`` (module docstring); under torchrun the share is
    split between the processes of this machine (``LOCAL_WORLD_SIZE``)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(CUDA_SHARE * free) + torch.cuda.memory_allocated(device)
    return int(CPU_SHARE * available_bytes() / local) + resident_bytes()


def held_bytes(device: torch.device) -> int:
    """What the process holds before attacking (module docstring)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return resident_bytes()


class TensorPeak(TorchDispatchMode):
    """The peak bytes of the CPU tensor storages created while the mode is active and alive at
    the same time (storages shared by views count once; storages that existed before are not
    counted). Memory a kernel allocates internally, outside any tensor, is not seen."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self.live:
            return
        self.live[key] = size
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


def measure_peak(step: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by ``step()`` above what was allocated before it (module
    docstring: the CUDA allocator's peak, or :class:`TensorPeak` on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with TensorPeak() as tracker:
        step()
    return tracker.peak


def probe_params(params: tuple[tuple[str, object], ...]) -> tuple[tuple[str, object], ...]:
    """An attack's settings with its iteration counts cut for the probe
    (:data:`PROBE_SETTINGS`)."""
    cut = []
    for name, value in params:
        if name in PROBE_SETTINGS and isinstance(value, int) and not isinstance(value, bool):
            value = min(value, PROBE_SETTINGS[name])
        cut.append((name, value))
    return tuple(cut)


@dataclass(frozen=True)
class RowCost:
    """The memory budgeted per image for ``label`` (an attack, or every attack)."""

    label: str
    per_image: int

    @classmethod
    def measured(cls, label: str, peak: int) -> RowCost:
        """From a probe's ``peak`` bytes on one image, times :data:`SAFETY`."""
        return cls(label, int(SAFETY * peak))


def activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of every leaf module's outputs in one no-grad forward pass of ``x``."""
    total = 0

    def count(module, args, output) -> None:
        nonlocal total
        total += sum(t.numel() * t.element_size() for t in tree_leaves(output)
                     if isinstance(t, torch.Tensor))  # fmt: skip

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def activation_bound(model: torch.nn.Module, x: torch.Tensor) -> RowCost:
    """A generous cost of any attack's batch step, without running one: per image
    :data:`ACTIVATION_BOUND` times the activations of one forward pass of ``x[:1]``."""
    per_image = ACTIVATION_BOUND * activation_bytes(model, x[:1])
    return RowCost(f"any attack ({ACTIVATION_BOUND}x one forward pass' activations)", per_image)


@dataclass(frozen=True)
class Budget:
    """The memory a run may use (``total``) and what the process holds before attacking."""

    total: int
    held: int
    given: bool  #: from --max-memory (else the default share)

    @property
    def free(self) -> int:
        return self.total - self.held

    def fits(self, cost: RowCost, batch_size: int) -> bool:
        return self.held + batch_size * cost.per_image <= self.total

    def batch_size(self, cost: RowCost, cap: int = DEFAULT_BATCH_SIZE) -> int:
        """The largest batch (at most ``cap``) whose cost fits; ValueError naming the figure
        needed when not even one image does."""
        fits = self.free // max(cost.per_image, 1)
        if fits < 1:
            source = "--max-memory" if self.given else "the default budget (--max-memory)"
            raise UserError(
                f"{source} {format_size(self.total)} is below what one image needs for "
                f"{cost.label}: {format_size(self.held + cost.per_image)} (the process holds "
                f"{format_size(self.held)}, one image takes {format_size(cost.per_image)}); "
                f"give --max-memory {_round_up(self.held + cost.per_image)} or more"
            )
        return int(min(cap, fits))

    def check(self, cost: RowCost, batch_size: int) -> None:
        """ValueError unless a batch of ``batch_size`` images fits (an explicit --batch-size);
        the figure for one image when not even that fits."""
        self.batch_size(cost, cap=1)
        need = self.held + batch_size * cost.per_image
        if not self.fits(cost, batch_size):
            raise UserError(
                f"--batch-size {batch_size} needs {format_size(need)} for {cost.label}, above "
                f"--max-memory {format_size(self.total)}; give a smaller --batch-size or omit "
                "it (the batch size then follows --max-memory)"
            )


def _round_up(size: int) -> str:
    """A --max-memory value at least ``size``: whole MB below 1 GB, tenths of a GB above."""
    if size < 2**30:
        return f"{-(-size // 2**20)}M"
    return f"{-(-size * 10 // 2**30) / 10:g}G"


def budget(max_memory: str | int | None, device: torch.device) -> Budget:
    """The run's budget: ``--max-memory`` or the default share, and what is held now."""
    held = held_bytes(device)
    if max_memory is None:
        return Budget(default_budget(device), held, given=False)
    return Budget(parse_size(max_memory), held, given=True)


def probe_plan(plan):
    """``plan`` with its iteration counts cut for the probe."""
    return dataclasses.replace(plan, params=probe_params(plan.params))
