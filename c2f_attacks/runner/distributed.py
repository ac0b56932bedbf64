"""Sharding a run over processes started by ``torchrun`` (one process without it).

Images are split into fixed blocks by index (:class:`~c2f_attacks.runner.shards.Layout`) and the
blocks are dealt to the ranks round-robin; each rank writes its batches' results to the run's
shards under ``--out`` (a folder every rank sees), and after a barrier rank 0 merges and writes.
Each image is attacked in the same batch whatever the number of processes, and attacks are
deterministic per image, so a sharded run gives the numbers of a single-process run with the
same seed (and the same number of threads per process: see the runs page of the docs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from c2f_attacks.errors import UserError


def local_device(device: str) -> str:
    """This process's device: under torchrun (``LOCAL_RANK`` set) a plain ``"cuda"`` means the
    GPU of this rank on its node, ``cuda:LOCAL_RANK``; anything else is used as given (an
    explicit ``cuda:N`` puts every rank on GPU N)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` processes (1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> Ranks:
        """Join torchrun's process group (NCCL on CUDA, gloo otherwise) when WORLD_SIZE > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            if device.startswith("cuda"):  # NCCL needs each rank's own GPU set before it joins
                torch.cuda.set_device(local_device(device))
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batches(self, n: int, batch_size: int) -> list[range]:
        """This rank's batches of ``range(n)``: batch ``i`` goes to rank ``i % world``."""
        starts = range(0, n, batch_size)
        return [range(s, min(s + batch_size, n))
                for i, s in enumerate(starts) if i % self.world == self.rank]  # fmt: skip

    def share(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank (a decision taken once, such as the batch sizes)."""
        return self.gather(value)[0]

    def gather(self, part: Any) -> list[Any]:
        """Every rank's ``part``, in rank order, on every rank."""
        if self.world == 1:
            return [part]
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part)
        return parts

    def check_same(self, value: str, what: str) -> None:
        """All ranks must agree on ``value`` (e.g. the output folder), or every rank fails."""
        values = self.gather(value)
        if len(set(values)) != 1:
            raise UserError(f"ranks disagree on {what}: {values}")

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
