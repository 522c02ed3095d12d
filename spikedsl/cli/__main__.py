"""``python -m spikedsl.cli``."""

import sys

from spikedsl.cli import main

sys.exit(main())
