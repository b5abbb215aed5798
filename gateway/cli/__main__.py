"""`python -m gateway.cli`: the same as the `yrdx` console script."""

import sys

from gateway.cli import main

sys.exit(main())
