"""`python -m spectask.devbroker ensure|status|stop`."""

import sys

from spectask.devbroker.ensure import main

sys.exit(main())
