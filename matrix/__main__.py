"""`python -m matrix` is the `matrix` command."""

import sys

from matrix.cli import main

sys.exit(main())
