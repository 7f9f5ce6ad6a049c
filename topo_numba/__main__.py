"""``python -m topo_numba``: the same as the ``topo-numba`` command (see `topo_numba.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
