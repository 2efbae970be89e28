"""`python -m iwc.host.sandbox`: see `iwc.host.sandbox.cli`."""

import sys

from iwc.host.sandbox.cli import main

sys.exit(main())
