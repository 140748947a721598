"""``python -m warp.tool.bench``: the same as ``warpzip bench device``."""

import sys

from warp.tool.bench.command import main

sys.exit(main())
