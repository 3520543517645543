import sys

from erf.cli import main

sys.exit(main())
