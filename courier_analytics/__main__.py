"""`python -m courier_analytics`: the same as the `courier-analytics` command."""

from __future__ import annotations

import sys

from courier_analytics._cli import main

if __name__ == "__main__":
    sys.exit(main())
