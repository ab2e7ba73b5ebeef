"""`python -m flows.cli`: the same as the `ragtune` command."""

import sys

from flows.cli import main

sys.exit(main())
