"""``c2f-bench report``: the findings (Markdown), a static results site (one HTML page) and the
README's headline block, generated from a results folder.

Everything is a function of the files in the folder (and of the shipped checkpoints' metadata),
so the output is byte-identical across runs and machines: no timestamps, fixed float formats,
fixed orders. :func:`render` builds every requested file in memory first, so a folder that
cannot be read whole writes nothing; :func:`write` then writes each atomically, and
:func:`first_difference` is what ``--check`` reports.

- :mod:`~c2f_attacks.report.sources`: the folder's files, read strictly;
- :mod:`~c2f_attacks.report.findings`: the findings sections (a registry: one small function
  per kind of file); :mod:`~c2f_attacks.report.headlines`: the headline sentences;
- :mod:`~c2f_attacks.report.site`: the page; :mod:`~c2f_attacks.report.readme`: the block.
"""

from __future__ import annotations

import os
from pathlib import Path

from c2f_attacks._io import atomic_write_text
from c2f_attacks.errors import UserError
from c2f_attacks.report import readme
from c2f_attacks.report.findings import SECTIONS, Context, findings_markdown, section
from c2f_attacks.report.headlines import HEADLINES, headline, headline_markdown
from c2f_attacks.report.site import site_html
from c2f_attacks.report.sources import Results

__all__ = [
    "HEADLINES",
    "SECTIONS",
    "Results",
    "first_difference",
    "headline",
    "render",
    "render_file",
    "section",
    "write",
]


def render_file(results: Results, path: str | os.PathLike, kind: str | None = None) -> str:
    """The text ``path`` should hold: ``kind`` "findings", "site" or "readme" (None: a file
    holding the README markers is a readme, ``.html`` a site, anything else findings). Links
    are relative to ``path``'s folder."""
    path = Path(path)
    if kind is None:
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        kind = ("readme" if readme.has_block(current) else
                "site" if path.suffix.lower() in (".html", ".htm") else "findings")  # fmt: skip
    ctx = Context(results, path.parent)
    if kind == "findings":
        return findings_markdown(ctx, headline_markdown(ctx))
    if kind == "site":
        return site_html(ctx, headline_markdown(ctx))
    if kind == "readme":
        if not path.is_file():
            raise UserError(f"{path} does not exist (--readme edits an existing file)")
        text = path.read_text(encoding="utf-8")
        return readme.replace_block(text, headline_markdown(ctx), str(path))
    raise ValueError(f"unknown report file kind {kind!r}")


def render(
    results_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    findings: str | os.PathLike | None = None,
    readme_file: str | os.PathLike | None = None,
) -> dict[Path, str]:
    """Path -> text of every requested file: ``out/index.html`` and ``out/findings.md`` (or
    ``findings``), and the README with its block regenerated. Nothing is written."""
    results = Results.open(results_dir)
    targets: dict[Path, str] = {}
    if out is not None:
        targets[Path(out) / "index.html"] = "site"
        targets[Path(findings) if findings else Path(out) / "findings.md"] = "findings"
    elif findings is not None:
        targets[Path(findings)] = "findings"
    if readme_file is not None:
        targets[Path(readme_file)] = "readme"
    return {path: render_file(results, path, kind) for path, kind in targets.items()}


def write(files: dict[Path, str]) -> None:
    for path, text in files.items():
        atomic_write_text(path, text)


def first_difference(path: str | os.PathLike, expected: str) -> str | None:
    """None when ``path`` holds ``expected``; else where it first differs, in one line."""
    path = Path(path)
    if not path.is_file():
        return f"{path} does not exist"
    found = path.read_text(encoding="utf-8").splitlines()
    want = expected.splitlines()
    for i, (a, b) in enumerate(zip(want, found), start=1):
        if a != b:
            return f"{path}, line {i}: expected {_clip(a)!r}, found {_clip(b)!r}"
    if len(want) != len(found):
        i = min(len(want), len(found)) + 1
        more = "more lines" if len(found) > len(want) else "fewer lines"
        return f"{path}, line {i}: the file has {more} than expected ({len(found)} vs {len(want)})"
    if path.read_text(encoding="utf-8") != expected:
        return f"{path}: line endings or the final newline differ"
    return None


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
