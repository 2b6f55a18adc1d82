"""``python -m lethe ...``: the same CLI as the ``lethe`` command."""

import sys

from lethe.cli import main

sys.exit(main())
