"""``python -m bench``: see :mod:`bench.driver`."""

from bench.driver import main

raise SystemExit(main())
