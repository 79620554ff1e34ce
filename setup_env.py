#!/usr/bin/env python3
"""Build the engine and prepare a model (bitnet.cpp's script and flags); see --help."""

import sys

from bitnet.cli.setup_env import main

if __name__ == "__main__":
    sys.exit(main())
