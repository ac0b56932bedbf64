"""A run's completed batches on disk: results stream out batch by batch, and a killed run resumes.

Every invocation of ``c2f-bench run`` keeps its state under ``<out>/.partial/<run id>/`` until
its leaderboard rows, records and adversarial images are written; then the folder goes. The run
id is a hash of the run's fingerprints, so runs with other settings into the same ``--out`` keep
apart (they may run at the same time, as the leaderboard allows).

- ``state.json``: per config (model, sweep point) its *fingerprint*, everything that changes a
  number (model and model hash, data, seed, device, every row's full key, an explicit batch
  size), and once chosen its batch *layout* (:class:`Layout`).
- ``lock``: held by the running process (released by the kernel when it dies, ``kill -9``
  included): the same run started twice at once is refused.
- ``<config>/<row_id>/<start>-<stop>.npz``: one *shard* per row and batch of images
  ``start..stop-1``, written atomically once the batch is done: the batch's per-image records
  (``rec.<column>``), its compacted adversarial images
  (:class:`~c2f_attacks.evaluation.adversarial.AdversarialBatch`, ``adv.*``) and ``meta``
  (attack seconds, onnxruntime counts, rank). A shard that exists is complete.

``--resume`` continues the run whose fingerprints equal this one's: the shards that exist are
not attacked again and the batch layout is the stored one, so the numbers are those of an
uninterrupted run. A changed setting or model is refused with one line naming it (compared with
the most recent interrupted run in ``--out``). Without ``--resume`` the same run starts over,
discarding its old shards (a warning says how many).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from c2f_attacks._io import atomic_write, atomic_write_text
from c2f_attacks.errors import UserError
from c2f_attacks.evaluation.adversarial import AdversarialBatch
from c2f_attacks.evaluation.records import RECORD_COLUMNS, RECORD_KINDS
from c2f_attacks.runner.distributed import Ranks

PARTIAL = ".partial"
FORMAT = "c2f-attacks/run-state"
VERSION = 1
_RECORD_DTYPES = {"int": np.int64, "float": np.float64, "bool": np.bool_}


class ResumeWarning(UserWarning):
    """An interrupted run's completed batches are discarded (the run starts over)."""


@dataclass(frozen=True)
class Layout:
    """How a config's images are cut into batches: ``block`` images are loaded at a time (and
    dealt to the ranks), and each row attacks a block in batches of its own size."""

    block: int
    batch: Mapping[str, int]  #: row label -> batch size

    def blocks(self, n: int) -> list[range]:
        return [range(s, min(s + self.block, n)) for s in range(0, n, self.block)]

    def batches(self, label: str, block: range) -> list[range]:
        size = self.batch[label]
        return [range(s, min(s + size, block.stop)) for s in range(block.start, block.stop, size)]

    def to_json(self) -> dict:
        return {"block": self.block, "batch": dict(self.batch)}

    @classmethod
    def from_json(cls, data: Mapping) -> Layout:
        return cls(int(data["block"]), {k: int(v) for k, v in data["batch"].items()})


def run_id(fingerprints: Sequence[Mapping[str, Any]]) -> str:
    """16 hex digits of the SHA-256 of the fingerprints (canonical JSON)."""
    text = json.dumps(list(fingerprints), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_change(old: Sequence[Mapping], new: Sequence[Mapping]) -> str:
    """What differs between two runs' fingerprints, in a few words (the first difference)."""
    if len(old) != len(new):
        names = [str(f.get("model")) for f in old], [str(f.get("model")) for f in new]
        return (f"the interrupted run had {len(old)} configs {names[0]}, this one "
                f"{len(new)} {names[1]}")  # fmt: skip
    for i, (a, b) in enumerate(zip(old, new)):
        where = f" (config {i + 1})" if len(new) > 1 else ""
        for field in dict.fromkeys([*a, *b]):
            if field == "rows" or a.get(field) == b.get(field):
                continue
            if field == "model_hash":
                return (f"model {b.get('model')} has changed since the interrupted run (hash "
                        f"{a.get(field)} -> {b.get(field)}){where}")  # fmt: skip
            return f"{field} was {a.get(field)!r}, now {b.get(field)!r}{where}"
        rows_a, rows_b = a.get("rows", {}), b.get("rows", {})
        added, removed = sorted(set(rows_b) - set(rows_a)), sorted(set(rows_a) - set(rows_b))
        if added or removed:
            return f"the rows differ (added {added}, removed {removed}){where}"
        for label in rows_b:
            for setting in dict.fromkeys([*rows_a[label], *rows_b[label]]):
                was, now = rows_a[label].get(setting), rows_b[label].get(setting)
                if was != now:
                    return f"{setting} of {label} was {was!r}, now {now!r}{where}"
    return "the settings differ"


class ConfigShards:
    """The shards of one config of a run (module docstring)."""

    def __init__(self, folder: Path, state: RunState, position: int):
        self.folder, self._state, self._position = folder, state, position

    @property
    def layout(self) -> Layout | None:
        data = self._state.configs[self._position].get("layout")
        return None if data is None else Layout.from_json(data)

    def set_layout(self, layout: Layout) -> None:
        """Store the layout (rank 0; the other ranks are given the same one)."""
        self._state.configs[self._position]["layout"] = layout.to_json()
        if self._state.ranks.is_main:
            self._state.save()

    def path(self, row: str, batch: range) -> Path:
        return self.folder / row / f"{batch.start:09d}-{batch.stop:09d}.npz"

    def done(self, row: str, batch: range) -> bool:
        return self.path(row, batch).is_file()

    def write(
        self, row: str, batch: range, records: pd.DataFrame, adversarial: AdversarialBatch,
        meta: Mapping[str, Any],
    ) -> Path:  # fmt: skip
        """Write one row's batch (atomic: the shard exists complete or not at all)."""
        arrays = {f"rec.{c}": records[c].to_numpy() for c in RECORD_COLUMNS}
        arrays.update({f"adv.{k}": v for k, v in adversarial.to_arrays().items()})
        arrays["meta"] = np.array(json.dumps(dict(meta)))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        return atomic_write(self.path(row, batch), write)

    def shards(self, row: str, batches: Sequence[range]) -> list[Path]:
        """The shard files of ``batches`` (ascending); ValueError naming the first missing."""
        paths = [self.path(row, b) for b in batches]
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise UserError(f"run state {self.folder}: batch file {missing.name} of row {row} "
                             "is missing (a rank failed?); run again with --resume")  # fmt: skip
        return paths

    def read(self, path: Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays of one shard (all, or ``names``); ValueError naming the file if damaged."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in (data.files if names is None else names)}
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise UserError(
                f"run state: batch file {path} cannot be read ({err}); delete it and run again "
                "with --resume to recompute that batch"
            ) from None

    def records(self, row: str, batches: Sequence[range]) -> pd.DataFrame:
        """The row's per-image records over ``batches``, in image order."""
        names = [f"rec.{c}" for c in RECORD_COLUMNS]
        parts = [self.read(p, names) for p in self.shards(row, batches)]
        return pd.DataFrame({
            c: np.concatenate([p[f"rec.{c}"] for p in parts]).astype(_RECORD_DTYPES[k])
            for c, k in RECORD_KINDS.items()
        })  # fmt: skip

    def meta(self, row: str, batches: Sequence[range]) -> list[dict]:
        return [json.loads(str(self.read(p, ["meta"])["meta"])) for p in self.shards(row, batches)]

    def adversarial(self, row: str, batches: Sequence[range]) -> ShardedAdversarial:
        """The row's adversarial batches, read from disk one at a time."""
        return ShardedAdversarial(self, self.shards(row, batches))


class ShardedAdversarial(Sequence):
    """A row's :class:`AdversarialBatch` es on disk, loaded one at a time (a lazy sequence)."""

    def __init__(self, shards: ConfigShards, paths: list[Path]):
        self._shards, self._paths = shards, paths

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        arrays = self._shards.read(self._paths[i])
        return AdversarialBatch.from_arrays(
            {k.removeprefix("adv."): v for k, v in arrays.items() if k.startswith("adv.")}
        )


class RunState:
    """The state folder of one run (module docstring); :meth:`open` it, :meth:`config` its
    configs, :meth:`finish` it."""

    def __init__(self, folder: Path, fingerprints: list[dict], ranks: Ranks):
        self.folder, self.ranks = folder, ranks
        self.configs = [{"fingerprint": f, "layout": None} for f in fingerprints]
        self._lock: FileLock | None = None

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, out: Path, fingerprints: list[dict], resume: bool, ranks: Ranks) -> RunState:
        """The run's state under ``out``: created (removing this run's old shards unless
        ``resume``) or, with ``resume``, the interrupted one. ValueError (one line) when
        ``resume`` finds no interrupted run or one with other settings; OSError when the same
        run is being written by another process. Every rank gets the same state (rank 0 decides;
        the folder must be one all ranks see)."""
        state = cls(out / PARTIAL / run_id(fingerprints), fingerprints, ranks)
        error = None
        if ranks.is_main:
            try:
                state._open_main(resume)
            except (ValueError, OSError) as err:
                error = (type(err).__name__, str(err))
        error = ranks.share(error)
        if error is not None:
            state.close()
            raise (ValueError if error[0] == "ValueError" else OSError)(error[1])
        if not ranks.is_main:
            state.configs = state._read()["configs"]
        return state

    def _open_main(self, resume: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.folder / "lock")
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            self._lock = None
            raise OSError(f"another c2f-bench run with the same settings is writing into "
                          f"{self.folder.parent.parent} (its lock {self.folder / 'lock'} is "
                          "held)") from None  # fmt: skip
        saved = self.folder / "state.json"
        if resume:
            if not saved.is_file():
                raise UserError(self._no_resume_reason())
            self.configs = self._read()["configs"]
            return
        stale = sum(1 for _ in self.folder.glob("*/*/*.npz"))
        for child in self.folder.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
        if stale:
            warnings.warn(f"starting over: {stale} completed batch files of an interrupted run "
                          f"with the same settings in {self.folder} were discarded (--resume "
                          "continues such a run)", ResumeWarning, stacklevel=3)  # fmt: skip
        self.save()

    def _no_resume_reason(self) -> str:
        """Why --resume cannot continue: no interrupted run, or what differs from the latest."""
        out = self.folder.parent.parent
        others = sorted((p for p in self.folder.parent.glob("*/state.json")
                         if p.parent != self.folder), key=lambda p: p.stat().st_mtime)  # fmt: skip
        if not others:
            return f"--resume: {out} holds no interrupted run; run without --resume"
        try:
            old = [c["fingerprint"] for c in json.loads(others[-1].read_text())["configs"]]
        except (OSError, ValueError, KeyError, TypeError):
            return f"--resume: the interrupted run's state {others[-1]} cannot be read"
        new = [c["fingerprint"] for c in self.configs]
        return (f"--resume: {describe_change(old, new)}; run with the interrupted run's "
                "settings, or without --resume to start over")  # fmt: skip

    def _read(self) -> dict:
        path = self.folder / "state.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserError(f"run state {path} cannot be read: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"run state {path} is not a {FORMAT} file")
        if data.get("version") != VERSION:
            raise UserError(f"run state {path} has version {data.get('version')!r}; this "
                             f"library reads version {VERSION} (run without --resume)")  # fmt: skip
        return data

    def save(self) -> None:
        data = {"format": FORMAT, "version": VERSION, "configs": self.configs}
        atomic_write_text(self.folder / "state.json", json.dumps(data, indent=1, default=str))

    # -- use -----------------------------------------------------------------------------------
    def config(self, position: int) -> ConfigShards:
        return ConfigShards(self.folder / str(position), self, position)

    def completed(self) -> int:
        """How many shards (row batches) are already on disk."""
        return sum(1 for _ in self.folder.glob("*/*/*.npz"))

    def finish(self) -> None:
        """Remove the state once every result is written (rank 0, after every rank is done)."""
        self.ranks.barrier()
        if self.ranks.is_main:
            self.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # only when no other run keeps its state there
                self.folder.parent.rmdir()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
