"""The main job, ``c2f-bench run``: attack a model, measure, upsert the leaderboard, draw figures.

A run is a list of :class:`Plan` s, one per leaderboard row: FGSM and PGD at each stage with a
fixed eps and in minimal-eps mode, LRPC at the coarse stage, LRPF at the fine stage. Images are
split into fixed batches of ``batch_size`` by index; under ``torchrun`` the batches are dealt to
the ranks round-robin and rank 0 gathers, measures and writes. Every image is attacked in the
same batch whatever the number of processes, and attacks are deterministic per image, so a
sharded run gives the numbers of a single-process run with the same seed.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from c2f_attacks.attacks import FGSM, LRPC, LRPF, PGD, Attack
from c2f_attacks.data import ShapesC2F, get_dataset
from c2f_attacks.leaderboard import config_string, environment_columns, format_table, upsert_rows
from c2f_attacks.metrics import attack_metrics
from c2f_attacks.models import C2FClassifier, load_model
from c2f_attacks.train import seed_everything

ATTACKS = ("fgsm", "pgd", "lrpc", "lrpf")
STAGES = ("coarse", "fine")
MODES = ("fixed", "minimal")
BACKENDS = ("torch", "onnxruntime")
_LRP_STAGE = {"lrpc": "coarse", "lrpf": "fine"}


@dataclass(frozen=True)
class Plan:
    """One attack configuration: (attack, stage, mode) -> one leaderboard row.

    ``mode`` is "fixed" (eps-bounded), "minimal" (per-image smallest successful eps, searched up
    to eps) or "first_success" (LRPC/LRPF: stop each image at its first success).
    """

    attack: str
    stage: str
    mode: str

    def build(self, model: C2FClassifier, eps: float, seed: int) -> Attack:
        if self.attack in _LRP_STAGE:
            return (LRPC if self.attack == "lrpc" else LRPF)(model, seed=seed)
        cls = FGSM if self.attack == "fgsm" else PGD
        return cls(model, eps=eps, stage=self.stage, minimal_eps=self.mode == "minimal", seed=seed)

    @property
    def label(self) -> str:
        return f"{self.attack}/{self.stage}/{self.mode}"


def plan_runs(attacks: Sequence[str], stages: Sequence[str], modes: Sequence[str]) -> list[Plan]:
    """The plans for the requested attacks, stages and modes (LRPC/LRPF each have one stage)."""
    for name, given, known in (("attack", attacks, ATTACKS), ("stage", stages, STAGES),
                               ("mode", modes, MODES)):  # fmt: skip
        unknown = [g for g in given if g not in known]
        if unknown:
            raise ValueError(f"unknown {name} {unknown[0]!r}; choose from {', '.join(known)}")
    plans = []
    for attack in attacks:
        if attack in _LRP_STAGE:
            if _LRP_STAGE[attack] in stages:
                plans.append(Plan(attack, _LRP_STAGE[attack], "first_success"))
            continue
        plans += [Plan(attack, stage, mode) for stage in stages for mode in modes]
    if not plans:
        raise ValueError(
            "nothing to run: LRPC attacks the coarse stage only and LRPF the fine stage only"
        )
    return plans


@dataclass
class RunConfig:
    model: str = "shapes-vgg16"
    dataset: str = "shapes"
    split: str = "test"
    root: str | None = None
    n: int = 256
    attacks: Sequence[str] = ATTACKS
    stages: Sequence[str] = STAGES
    modes: Sequence[str] = MODES
    eps: float = 8 / 255
    backend: str = "onnxruntime"
    seed: int = 0
    out: str | os.PathLike = "results"
    device: str = "cpu"
    batch_size: int = 128
    figures: bool = True
    progress: bool = True
    plans: list[Plan] = field(init=False)

    def __post_init__(self):
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive integer, got {self.n!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1] (pixel scale), got {self.eps}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        self.plans = plan_runs(self.attacks, self.stages, self.modes)


# ----------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` processes (1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> Ranks:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, part: dict[int, dict]) -> dict[int, dict]:
        """Merge every rank's ``{batch: results}`` on all ranks (rank 0 uses it)."""
        if self.world == 1:
            return part
        parts: list[dict[int, dict] | None] = [None] * self.world
        dist.all_gather_object(parts, part)
        return {k: v for p in parts for k, v in p.items()}

    def check_same(self, value: str, what: str) -> None:
        """All ranks must agree on ``value`` (e.g. the output folder), or every rank fails."""
        if self.world == 1:
            return
        values: list[str | None] = [None] * self.world
        dist.all_gather_object(values, value)
        if len(set(values)) != 1:
            raise ValueError(f"ranks disagree on {what}: {values}")


# ----------------------------------------------------------------------------- the job
def load_images(dataset: str, split: str, n: int, root: str | None = None):
    """(images, fine labels, object masks or None, hierarchy) of the first ``n`` images."""
    ds = get_dataset(dataset, split, n=n, root=root)
    if isinstance(ds, ShapesC2F):
        return (*ds.tensors(), ds.hierarchy)
    loader = torch.utils.data.DataLoader(ds, batch_size=256)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys), None, ds.hierarchy


def attack_in_batches(
    atk: Attack,
    x: torch.Tensor,
    ranks: Ranks,
    batch_size: int,
    device: str,
    progress: bool,
    label: str = "",
) -> tuple[dict[str, torch.Tensor], float]:
    """Attack this rank's batches; gather every batch's per-image results; (results, seconds)."""
    batches = range(0, len(x), batch_size)
    mine = [b for i, b in enumerate(batches) if i % ranks.world == ranks.rank]
    part = {}
    start = time.perf_counter()
    for b in tqdm(mine, desc=f"  {label}", leave=False, disable=not progress):
        xb = x[b : b + batch_size].to(device)
        index = torch.arange(b, b + len(xb), device=device)
        res = atk(xb, index=index)
        part[b] = {"x_adv": res.x_adv.cpu(), "queries": res.queries.cpu()}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    merged = ranks.gather(part)
    seconds = time.perf_counter() - start
    return {k: torch.cat([merged[b][k] for b in batches]) for k in ("x_adv", "queries")}, seconds


def describe(plan: Plan, atk: Attack) -> dict:
    """The leaderboard key columns of an attack: norm, eps, steps and its other settings."""
    settings = {
        k: v
        for k, v in vars(atk).items()
        if isinstance(v, (bool, int, float, str)) and k not in ("seed", "stage", "eps", "steps")
    }
    settings["mode"] = plan.mode
    return {
        "norm": "linf",
        "eps": getattr(atk, "eps", None),
        "steps": getattr(atk, "steps", None),
        "config": config_string(**settings),
    }


def run(cfg: RunConfig) -> pd.DataFrame:
    """Run every plan of ``cfg``; on rank 0 upsert the leaderboard and return this run's rows."""
    ranks = Ranks.from_env(cfg.device)
    out = Path(cfg.out)
    ranks.check_same(str(out.resolve()), "--out")
    if ranks.is_main:
        _check_writable(out)
    seed_everything(cfg.seed)
    model = load_model(cfg.model, map_location=cfg.device)
    x, y, masks, hierarchy = load_images(cfg.dataset, cfg.split, cfg.n, cfg.root)
    if hierarchy != model.hierarchy:
        raise ValueError(
            f"model {cfg.model} was built for another hierarchy than dataset {cfg.dataset} "
            f"({model.hierarchy} vs {hierarchy})"
        )
    # The ORT check compares with PyTorch on the CPU tensors; a CUDA model keeps its device.
    cpu_model = model if cfg.device == "cpu" else copy.deepcopy(model).cpu()
    session = _onnx_session(cpu_model) if cfg.backend == "onnxruntime" and ranks.is_main else None

    _warm_up(model, x[: cfg.batch_size].to(cfg.device))
    rows, examples = [], {}
    env = environment_columns(cfg.device)
    for plan in tqdm(cfg.plans, desc="attacks", disable=not (cfg.progress and ranks.is_main)):
        atk = plan.build(model, cfg.eps, cfg.seed)
        res, seconds = attack_in_batches(
            atk, x, ranks, cfg.batch_size, cfg.device, cfg.progress, plan.label
        )
        if not ranks.is_main:
            continue
        keep_coarse = plan.attack == "lrpf"
        metrics = attack_metrics(
            model, x, res["x_adv"], y, plan.stage, masks, keep_coarse=keep_coarse,
            queries=res["queries"], batch_size=cfg.batch_size,
        )  # fmt: skip
        row = {
            "model": cfg.model, "dataset": cfg.dataset, "attack": plan.attack,
            "stage": plan.stage, "mode": plan.mode, **describe(plan, atk), **metrics,
            "ms_per_image": 1000 * seconds / len(x), "images_per_s": len(x) / seconds,
            "eval_backend": cfg.backend, "seed": cfg.seed, **env,
        }  # fmt: skip
        if session is not None:
            from exporters import evaluate_fooling

            report = evaluate_fooling(
                session, x, res["x_adv"], plan.stage, cpu_model, fine_within_coarse=keep_coarse
            )
            row["fooling_ratio"], row["backend_agreement"] = report.fooling_ratio, report.agreement
        rows.append(row)
        examples[plan] = res["x_adv"]
    if not ranks.is_main:
        return pd.DataFrame()
    upsert_rows(out / "leaderboard.csv", rows)
    if cfg.figures:
        from c2f_attacks.figures import attack_figure

        for plan, x_adv in examples.items():
            if plan.mode != "minimal":
                attack_figure(
                    model,
                    x,
                    x_adv,
                    plan.stage,
                    out / "figures" / f"{plan.attack}_{plan.stage}.png",
                    title=f"{plan.attack.upper()} ({plan.stage} stage, {plan.mode}) on {cfg.model}",
                )
    return pd.DataFrame(rows)


def _warm_up(model: C2FClassifier, x: torch.Tensor) -> None:
    """One untimed FGSM, so that one-time set-up (kernel selection in the attacks' memory layout,
    allocator growth) is not billed to the first attack's ms_per_image."""
    FGSM(model, stage="coarse")(x)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OSError(f"output folder {out} is not writable: {err.strerror or err}") from None


def _onnx_session(model: C2FClassifier):
    """Export the model (parity-checked) and open it in onnxruntime; the file is temporary."""
    from exporters import OrtC2F, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        return OrtC2F(path)


#: what ``c2f-bench run`` prints: enough to compare the attacks at a glance
TABLE = ("attack", "stage", "mode", "eps", "n", "fooling_ratio", "success_rate", "linf_mean",
         "l2_mean", "l0_mean", "perturbation_in_relevance", "object_share", "queries_per_image",
         "ms_per_image", "backend_agreement")  # fmt: skip

__all__ = [
    "ATTACKS",
    "MODES",
    "STAGES",
    "TABLE",
    "Plan",
    "RunConfig",
    "format_table",
    "plan_runs",
    "run",
]
