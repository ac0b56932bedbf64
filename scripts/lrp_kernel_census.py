"""Which oneDNN kernels an LRP pass runs beyond a forward + backward pass, and what they cost.

    python scripts/lrp_kernel_census.py                      # VGG-16, 64 px, batch 32
    python scripts/lrp_kernel_census.py --size 224 --batch 2 --isa default AVX2

For each ISA cap (``ONEDNN_MAX_CPU_ISA``; ``default`` leaves oneDNN's own choice) and each pass
(``fb``: forward + input-gradient backward; ``lrp``: ``c2f_attacks.lrp.lrp`` with
``epsilon_plus_flat``) it runs a fresh process with ``ONEDNN_VERBOSE=1``, one thread and
contiguous (NCHW) images, times the second call (the first one warms up), and sums oneDNN's
reported time per primitive kind, implementation and propagation kind. Printed as a markdown
table; the per-primitive times are oneDNN's own and add up to most of each pass.

Why it matters: an LRP pass in the gradient-times-input form needs every convolution twice in
the forward direction (the true output ``z`` and the z+ rule's ``z+`` with ``W+``) and once in
backward-data (through the ``z+`` part only), so with forward time F and backward-data time B
per layer its convolutions cost ``2F + B`` against ``F + B``: a ratio of ``1 + F / (F + B)``,
which is 1.5 where F = B and more where the forward kernels are the slower ones.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys

_CHILD = """
import sys, torch, torchvision
from c2f_attacks.lrp import lrp
size, batch, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
torch.manual_seed(0)
model = torchvision.models.vgg16(weights=None).eval()
x, target = torch.rand(batch, 3, size, size), torch.arange(batch)

def fb():
    xg = x.clone().requires_grad_()
    return torch.autograd.grad(model(xg).gather(1, target[:, None]).sum(), xg)[0]

run = fb if what == "fb" else (lambda: lrp(model, x, target, check_range=False))
run()
print("=====timed=====", flush=True)
run()
"""


def census(isa: str, what: str, size: int, batch: int) -> dict[tuple[str, str, str], list]:
    """(primitive, implementation, propagation) -> [calls, milliseconds] of one timed pass."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    done = subprocess.run([sys.executable, "-c", _CHILD, str(size), str(batch), what], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    timed = done.stdout.split("=====timed=====", 1)[1]
    table: dict[tuple[str, str, str], list] = collections.defaultdict(lambda: [0, 0.0])
    for line in timed.splitlines():
        fields = line.strip().split(",")
        if "exec" not in fields:
            continue
        i = fields.index("exec")
        entry = table[(fields[i + 2], fields[i + 3], fields[i + 4])]
        entry[0] += 1
        entry[1] += float(fields[-1])
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--isa", nargs="+", default=["default", "AVX2"],
                   help="ONEDNN_MAX_CPU_ISA values (default: oneDNN's choice)")  # fmt: skip
    args = p.parse_args(argv)
    print(f"VGG-16, {args.size} px, batch {args.batch}, 1 thread, NCHW\n")
    print("| ISA | pass | primitive | implementation | propagation | calls | ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    totals = {}
    for isa in args.isa:
        for what in ("fb", "lrp"):
            table = census(isa, what, args.size, args.batch)
            totals[isa, what] = sum(ms for _, ms in table.values())
            for (kind, impl, prop), (calls, ms) in sorted(table.items(), key=lambda e: -e[1][1]):
                print(f"| {isa} | {what} | {kind} | {impl} | {prop} | {calls} | {ms:.0f} |")
    print()
    for isa in args.isa:
        fb, lrp = totals[isa, "fb"], totals[isa, "lrp"]
        print(f"{isa}: oneDNN time lrp / fb = {lrp:.0f} / {fb:.0f} ms = {lrp / fb:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
