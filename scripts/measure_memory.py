"""Peak memory of real ``c2f-bench run`` subprocesses: flat in the number of images, and the
224-px photo run within its budget.

Each measurement starts ``c2f-bench run`` as a child process and reads its peak resident memory
from the kernel (``wait4``'s ``ru_maxrss``, the child alone). Two studies:

- ``shapes``: shapes-vgg16 on the shapes test split at each ``--sizes`` n, for each row set of
  :data:`ROW_SETS` (one cheap row; FGSM and PGD; every default attack at one stage), with the
  default batch sizes. The growth from the smallest to the largest n is the figure to read.
- ``photos``: imagenet-efficientnet-lite0 on the six photos of :mod:`c2f_attacks.data.photos`
  (an image folder built in a temporary directory, each photo filed under the model's own clean
  prediction), every default attack at 224 px: peak memory with the default settings, and with
  ``--max-memory SIZE`` also under that budget, with the columns whose numbers differ from
  the default's.

``python scripts/measure_memory.py --out results/memory/memory.json`` writes the JSON (and a
Markdown table beside it); ``--studies shapes`` or ``photos`` runs one of them. Linux or macOS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from c2f_attacks._io import atomic_write_text

#: row sets of the shapes study: name -> c2f-bench run arguments
ROW_SETS = {
    "fgsm": ["--attacks", "fgsm", "--stages", "coarse", "--protocol", "fixed"],
    "fgsm+pgd": ["--attacks", "fgsm", "pgd", "--stages", "coarse", "--protocol", "fixed"],
    "all-coarse": ["--stages", "coarse", "--masks", "lrp", "random"],
}
#: leaderboard columns that differ between runs by design (timings, when, where)
VOLATILE = ("ms_per_image", "images_per_s", "timestamp", "git_commit")
PHOTO_HIERARCHY = "imagenet_superclasses.json"


def peak_rss(args: list[str], log: Path, env: dict | None = None) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``c2f-bench ARGS`` run as a child process."""
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "c2f_attacks.cli", *args],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"c2f-bench {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss * unit / 2**20, wall


def shapes_study(tmp: Path, sizes: list[int], sets: list[str]) -> Iterator[dict]:
    for name in sets:
        for n in sizes:
            out = tmp / f"shapes-{name}-{n}"
            args = ["run", "--model", "shapes-vgg16", "-n", str(n), "--quiet", "--no-figures",
                    "--out", str(out), *ROW_SETS[name]]  # fmt: skip
            peak, wall = peak_rss(args, tmp / f"{out.name}.log")
            yield {"study": "shapes", "rows": name, "n": n, "peak_rss_mb": round(peak),
                   "wall_s": round(wall, 1)}  # fmt: skip


def photo_folder(folder: Path) -> None:
    """The six photos as an image folder, each under the wnid the model predicts for it."""
    import numpy as np
    import torch
    from PIL import Image

    from c2f_attacks.data.photos import PHOTOS, load_photos, photo_array
    from c2f_attacks.models import load_model

    model = load_model("imagenet-efficientnet-lite0")
    with torch.no_grad():
        fine = model(load_photos(list(PHOTOS))).fine_pred.tolist()
    for name, label in zip(PHOTOS, fine):
        target = folder / model.hierarchy.fine_names[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(photo_array(name))).save(target / f"{name}.png")


def photos_study(tmp: Path, max_memory: str | None) -> Iterator[dict]:
    """The default run on the photos, and with ``max_memory`` the same with that budget; the
    second row says whether its leaderboard numbers equal the first's."""
    import c2f_attacks.hierarchies as hierarchies

    folder = tmp / "photos"
    photo_folder(folder)
    hierarchy = Path(hierarchies.__file__).with_name(PHOTO_HIERARCHY)
    base = ["run", "--model", "imagenet-efficientnet-lite0", "--dataset", f"imagefolder:{folder}",
            "--hierarchy", str(hierarchy), "-n", "6", "--quiet", "--no-figures"]  # fmt: skip
    variants = {"default": []}
    if max_memory:
        variants[f"--max-memory {max_memory}"] = ["--max-memory", max_memory]
    boards = []
    for name, extra in variants.items():
        out = tmp / f"photos-{len(boards)}"
        peak, wall = peak_rss([*base, "--out", str(out), *extra], tmp / f"{out.name}.log")
        board = pd.read_csv(out / "leaderboard.csv").drop(columns=list(VOLATILE))
        boards.append(board.sort_values("row_id").reset_index(drop=True))
        row = {"study": "photos", "rows": "default", "n": 6, "settings": name,
               "peak_rss_mb": round(peak), "wall_s": round(wall, 1)}  # fmt: skip
        if len(boards) > 1:
            row["differs_from_default"] = differences(boards[0], boards[-1])
        yield row


def differences(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """The columns in which two leaderboards differ, with the largest difference ("" if none)."""
    found = []
    for column in a.columns:
        x, y = a[column], b[column]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            same = (x == y) | (x.isna() & y.isna())
            if not same.all():
                found.append(f"{column} {float((x - y)[~same].abs().max()):.1e}")
        elif not x.astype(str).equals(y.astype(str)):
            found.append(column)
    return ", ".join(found)


def write(out: Path, rows: list[dict]) -> None:
    """The JSON and its Markdown table, atomically: after every measurement, so a long study
    that is stopped keeps what it measured."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    result = {"command": " ".join(["python", *sys.argv]), "git_commit": commit,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "runs": rows}  # fmt: skip
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    table = pd.DataFrame(rows).to_markdown(index=False)
    atomic_write_text(out.with_suffix(".md"), f"`{result['command']}` at {commit}\n\n{table}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write (a .md table beside)")
    parser.add_argument("--studies", nargs="+", default=["shapes", "photos"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 4096])
    parser.add_argument("--sets", nargs="+", default=list(ROW_SETS), choices=list(ROW_SETS))
    parser.add_argument("--max-memory", help="photos: also run with this --max-memory")
    args = parser.parse_args()
    out, rows = Path(args.out), []
    with tempfile.TemporaryDirectory(prefix="c2f-memory-") as tmp:
        if "shapes" in args.studies:
            for row in shapes_study(Path(tmp), sorted(args.sizes), args.sets):
                rows.append(row)
                write(out, rows)
        if "photos" in args.studies:
            for row in photos_study(Path(tmp), args.max_memory):
                rows.append(row)
                write(out, rows)
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
