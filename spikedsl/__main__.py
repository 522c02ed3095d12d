"""``python -m spikedsl``: the command line."""

import sys

from spikedsl.cli import main

sys.exit(main())
