"""``python -m c2f_attacks.cli`` is ``c2f-bench`` (``torchrun -m c2f_attacks.cli`` runs it)."""

import sys

from c2f_attacks.cli import main

sys.exit(main())
