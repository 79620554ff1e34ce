#!/usr/bin/env python3
"""Aggregate generation tokens/s of the HTTP server with 1, 2, 4... concurrent streaming clients,
against --parallel 1 and the engine alone in the same run; see --help and bitnet/server/benchmark.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitnet.server.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
