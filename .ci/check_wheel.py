"""Check a built wheel: every package of pyproject.toml, the shipped checkpoint, the license.

Usage: python .ci/check_wheel.py dist/c2f_attacks-*.whl
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(wheel: str) -> int:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    required = [f"{p.replace('.', '/')}/__init__.py" for p in packages] + [
        "c2f_attacks/exporters/export.py",
        "c2f_attacks/checkpoints/shapes-vgg16.pt",
        *(f"c2f_attacks/report/assets/site.{ext}" for ext in ("html", "css", "js")),
    ]
    missing = [name for name in required if name not in names]
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        missing.append("*.dist-info/licenses/LICENSE")
    stray = sorted(n for n in names if n.split("/")[0] in ("exporters", "tests", "bench"))
    if missing or stray:
        print(f"{wheel}: missing {missing}; files outside the package {stray[:5]}", file=sys.stderr)
        return 1
    print(f"{wheel}: {len(names)} files, every package, the checkpoint and the license present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
