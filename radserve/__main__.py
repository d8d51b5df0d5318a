"""``python -m radserve``: the same as the ``radserve`` command."""

import sys

from radserve.cli import main

if __name__ == "__main__":  # importing the module (API documentation tools do) runs nothing
    sys.exit(main())
