"""``c2f-bench report``: findings, the static results site and the README's headline block from
a results folder (:mod:`c2f_attacks.report`).

Writing: ``--out DIR`` (``index.html``
and ``findings.md``), ``--findings FILE`` (the findings elsewhere), ``--readme FILE`` (only the
block between the markers). Checking: ``--check FILE ...`` exits 1 naming the first line of the
first file that differs from what the command would write now, 0 when every file is current.
A results folder that cannot be read whole is a user error (exit 2), and then nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from c2f_attacks.cli.options import add_allow_results_dir
from c2f_attacks.errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="findings (Markdown), a static results site and the README's headline block",
        description="Generate from a results folder (the --out of c2f-bench run, with any "
        "study files beside it): DIR/findings.md with every findings table under the file it "
        "comes from, and DIR/index.html, a self-contained page with the leaderboard (filter, "
        "sort, budget curves, attack figures), transfer heatmaps and model cards. Output is "
        "byte-identical for the same files.",
    )
    p.add_argument("results", metavar="RESULTS_DIR", help="the results folder to report on")
    p.add_argument("--out", metavar="DIR", help="write DIR/index.html and DIR/findings.md")
    p.add_argument("--findings", metavar="FILE",
                   help="write the findings to FILE (instead of DIR/findings.md)")  # fmt: skip
    p.add_argument("--readme", metavar="FILE",
                   help="regenerate the headline block between the markers in FILE")  # fmt: skip
    p.add_argument("--check", nargs="+", metavar="FILE",
                   help="write nothing; exit 1 naming the first differing line when a FILE "
                        "(findings, page or a file with the README markers) is not what this "
                        "command writes now")  # fmt: skip
    add_allow_results_dir(p, "the files written")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from c2f_attacks.report import Results, first_difference, render, render_file, write
    from c2f_attacks.runner.preflight import check_out_dir

    writes = [args.out, args.findings, args.readme]
    if args.check:
        if any(w is not None for w in writes):
            raise UserError("--check writes nothing: give it without --out, --findings and "
                             "--readme")  # fmt: skip
        results = Results.open(args.results)
        for path in args.check:
            problem = first_difference(path, render_file(results, path))
            if problem is not None:
                print(f"c2f-bench report: {problem}: not what `c2f-bench report {args.results}` "
                      "writes now; regenerate it", file=sys.stderr)  # fmt: skip
                return 1
        print(f"c2f-bench report: {', '.join(args.check)} up to date with {args.results}")
        return 0
    if all(w is None for w in writes):
        raise UserError("nothing to do: give --out DIR, --findings FILE, --readme FILE or "
                         "--check FILE")  # fmt: skip
    for folder in [args.out, *(Path(f).parent for f in (args.findings, args.readme) if f)]:
        if folder is not None:
            check_out_dir(folder, args.allow_results_dir)
    files = render(args.results, out=args.out, findings=args.findings, readme_file=args.readme)
    write(files)
    for path in files:
        print(f"wrote {path}")
    return 0
