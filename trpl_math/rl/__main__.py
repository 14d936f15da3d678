"""``python -m trpl_math.rl``: the ``trpl`` command line."""

import sys

from trpl_math.rl.cli import main

sys.exit(main())
