"""``python -m seqgraph ...`` runs the ``seqgraph`` command."""

import sys

from .cli import main

sys.exit(main())
