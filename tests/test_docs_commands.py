"""Every command shown in the README and docs/ runs as shown on the default output of
``c2f-bench run``.

Commands are taken from fenced ``bash`` blocks (continuation lines joined, comments dropped,
``&&`` chains split) and from inline ``c2f-bench ...`` code spans. Each is then:

- run, when cheap (``leaderboard``, ``compare``, ``report``, ``transfer`` onto PyTorch models),
  in a sandbox folder holding a small run of the default rows (both shipped models, every
  default attack, 2 images, few steps) as ``c2f-results/`` and ``results/``, with a copy of the
  README; it must exit 0;
- otherwise parsed by the very argument parser that would run it (``c2f-bench``'s, a script's
  own ``argparse`` parser, pytest's test paths), so an unknown option, a bad value or a missing
  required argument fails here;
- an inline mention of a command (``c2f-bench compare``) must name an existing subcommand, as
  must a pattern with placeholders (``--targets T ...``).

``docs/findings.md`` is generated output (its commands are templates) and is left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from c2f_attacks.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md")
                                    if p.name != "findings.md")]  # fmt: skip
#: subcommands cheap enough to run on the small run
CHEAP = {"leaderboard", "compare", "report", "transfer"}
#: set-up commands of the environment, shown for the reader, not run here
ENVIRONMENT = {"python3 -m venv", ". .venv/bin/activate", "pip install", "tox", "git clone"}
#: placeholders of the docs, as the sandbox names them
PLACEHOLDERS = {"OUT": "c2f-results", "RUN": "c2f-results", "RESULTS_DIR": "results",
                "DIR": "c2f-results-dir"}  # fmt: skip
#: commands that fail today because of known defects, with the reason (xfail, strict)
KNOWN_DEFECTS: dict[str, str] = {}
SMALL_RUN = ["-n", "2", "--batch-size", "2", "--set", "pgd.steps=2", "steps=3", "refresh=2",
             "--search-steps", "2", "--no-figures", "--quiet"]  # fmt: skip


@dataclass(frozen=True)
class Command:
    where: str  #: "README.md:12"
    text: str
    inline: bool

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _block_commands(path: Path) -> list[Command]:
    """Commands of the shell blocks: fenced ``bash``/``sh``/``shell`` or untagged."""
    found, lines = [], path.read_text().splitlines()
    fence, start, pending = None, 0, ""
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            fence = line.strip()[3:] if fence is None else None
            continue
        if fence not in ("bash", "sh", "shell", ""):
            continue
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        if not pending:
            start = number
        pending += code.rstrip().rstrip("\\").strip() + " "
        if code.rstrip().endswith("\\"):
            continue
        for part in pending.split("&&"):
            if part.strip():
                found.append(Command(f"{path.name}:{start}", part.strip(), inline=False))
        pending = ""
    return found


def _inline_commands(path: Path) -> list[Command]:
    text = path.read_text()
    return [
        Command(f"{path.name}:{text[: m.start()].count(chr(10)) + 1}",
                " ".join(m.group(1).split()), inline=True)
        for m in re.finditer(r"`(c2f-bench[^`]*)`", text)
    ]  # fmt: skip


def _commands() -> list[Command]:
    return [c for path in DOCS for c in (*_block_commands(path), *_inline_commands(path))]


def _argv(text: str) -> list[str]:
    """The command's words, placeholders named as the sandbox names them, leading environment
    assignments (``OMP_NUM_THREADS=1 pytest ...``) left out."""
    words = shlex.split(text)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words.pop(0)
    return [PLACEHOLDERS.get(token, token) for token in words]


def _is_reference(argv: list[str]) -> bool:
    """A mention of a command rather than an invocation: ``c2f-bench compare``, ``--targets T
    ...``."""
    rest = argv[1:]
    bare = len(rest) <= 2 and all(re.fullmatch(r"[a-z]+", a) for a in rest)
    placeholder = any(a == "..." or a.endswith("...") or re.fullmatch(r"[A-Z_]+", a)
                      for a in rest)  # fmt: skip
    return bare or placeholder


class _Parsed(Exception):
    """Raised in place of running a command once its arguments parsed."""


def _parse_script(script: Path, argv: list[str], monkeypatch) -> None:
    """Parse ``argv`` with the script's own parser (its ``main(argv)`` builds it), then stop."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    spec = importlib.util.spec_from_file_location(f"_doc_script_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed):
        module.main(argv)


def _parse_c2f_bench(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exit_:  # --help exits 0; a usage error exits 2
        assert exit_.code == 0, f"c2f-bench refuses {' '.join(argv)}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A working folder with a small run of the default rows as ``c2f-results`` and
    ``results``, a copy of the README, and the report's files already written once."""
    folder = tmp_path_factory.mktemp("docs-sandbox")
    cwd = Path.cwd()
    os.chdir(folder)  # the report names files as the command line does: relative, like the docs
    try:
        assert main(["run", *SMALL_RUN, "--out", "c2f-results"]) == 0
        shutil.copytree("c2f-results", "results")
        shutil.copy(ROOT / "README.md", "README.md")
        assert main(["report", "results", "--out", "results/site", "--findings",
                     "docs/findings.md", "--readme", "README.md"]) == 0  # fmt: skip
    finally:
        os.chdir(cwd)
    return folder


def _params():
    params = []
    for c in _commands():
        defect = KNOWN_DEFECTS.get(c.text)
        marks = [pytest.mark.xfail(reason=defect, strict=True)] if defect else []
        params.append(pytest.param(c, id=c.where, marks=marks))
    return params


def test_the_docs_show_commands():
    commands = _commands()
    assert any(c.text.startswith("c2f-bench run") for c in commands)
    assert any(c.text.startswith("c2f-bench report") for c in commands)
    assert any(c.text == "pytest" for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize("command", _params())
def test_command_runs_as_shown(command, request, monkeypatch, capsys):
    argv = _argv(command.text)
    subcommands = build_parser()._subparsers._group_actions[0].choices
    if argv[0] == "torchrun":  # its command follows --no-python
        argv = argv[argv.index("--no-python") + 1 :]
    if argv[0] == "c2f-bench":
        assert len(argv) == 1 or argv[1] in subcommands, f"{command}: no such subcommand"
        if _is_reference(argv):
            return
        _parse_c2f_bench(argv)
        onnx = any(a.startswith("onnx:") for a in argv)
        if argv[1] in CHEAP and not onnx and "--help" not in argv:
            monkeypatch.chdir(request.getfixturevalue("sandbox"))  # built for the first one
            code = main(argv[1:])
            assert code == 0, f"{command}: exit {code}: {capsys.readouterr().err}"
        return
    if argv[0] == "python" and argv[1].startswith("scripts/"):
        _parse_script(ROOT / argv[1], argv[2:], monkeypatch)
        return
    if argv[0] == "pytest":
        paths = [a for a in argv[1:] if not a.startswith("-")]
        assert all((ROOT / p).exists() for p in paths), f"{command}: no such test path"
        return
    assert any(command.text.startswith(e) for e in ENVIRONMENT), f"{command}: unclassified"
