"""``python -m erf ...``: the same as the ``erf`` command."""

import sys

from erf.cli import main

sys.exit(main())
