#!/usr/bin/env python3
"""Prompt-processing and generation tokens/s through the Python API (bitnet.cpp's flags:
-m MODEL -n 128 -p 512 -t 2); see --help and bitnet/bench.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitnet.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
