"""``python -m acme_xr``: the same as the ``acme-xr`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
