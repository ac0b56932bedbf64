"""Every file of the repository that the README, results/README.md and docs/ point to exists.

A path counts when it is a code span starting with a top-level folder of the repository
(``results/photos/``, ``configs/study.toml``) or a relative Markdown link; it may be written
from the repository root or from the document's own folder. Fenced code blocks are skipped;
placeholders (``<model>``, ``*``, ``{...}``) end the path there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FOLDERS = ("bench", "c2f_attacks", "configs", "docs", "exporters", "results", "scripts", "tests")
#: what a command writes that this version does not ship: scripts/gpu_check.py's output, written
#: on a CUDA machine, none of which has been lent to this project yet
NOT_SHIPPED = {"results/gpu/"}

_SPAN = re.compile(r"`((?:" + "|".join(FOLDERS) + r")/[^`\s]*)`")
_LINK = re.compile(r"\]\(([^)#\s]*[./][^)#\s]*)[)#]")  # a file or folder: a dot or a slash


def _paths(doc: Path) -> list[tuple[int, str]]:
    """(line, path) of every repository path ``doc`` names outside its fenced code blocks
    (whose formulas and shell lines are not references)."""
    text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), doc.read_text(),
                  flags=re.S | re.M)  # fmt: skip
    found = []
    for pattern in (_SPAN, _LINK):
        for m in pattern.finditer(text):
            path = re.split(r"[<*{]", m.group(1))[0].rstrip(".,:;")
            if path and not re.match(r"[a-z]+:", path):  # not a URL
                found.append((text[: m.start()].count("\n") + 1, path))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_point_to_files_that_exist(doc):
    missing = [
        f"{doc.relative_to(ROOT)}:{line}: {path}"
        for line, path in _paths(doc)
        if path not in NOT_SHIPPED
        and not (ROOT / path).exists()
        and not (doc.parent / path).exists()
    ]
    assert not missing, "\n".join(missing)


def test_a_stale_path_is_found(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(
        "See `results/no-such-run/` and [the page](no-such-page.md#part).\n"
        "```\nf(x)\n```\n`results/<model>/x` [site](https://a.b/c), clip_[0,1](x + u)\n"
    )
    assert _paths(doc) == [(1, "results/no-such-run/"), (5, "results/"), (1, "no-such-page.md")]
