import sys

from warp.device.main import main

sys.exit(main())
