#!/usr/bin/env python3
"""Generate text or chat with a ternary model (bitnet.cpp's script and flags); see --help."""

import sys

from bitnet.cli.run_inference import main

if __name__ == "__main__":
    sys.exit(main())
