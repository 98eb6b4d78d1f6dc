"""`python -m matrix` is the `matrix` command."""

import sys

from matrix.launch import main

sys.exit(main())
