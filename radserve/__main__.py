"""``python -m radserve``: the same as the ``radserve`` command."""

import sys

from radserve.cli import main

sys.exit(main())
