"""``python -m mkt.cli``."""

import sys

from mkt.cli import main

sys.exit(main())
