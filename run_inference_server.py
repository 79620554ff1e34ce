#!/usr/bin/env python3
"""Serve a ternary model over HTTP with OpenAI's API (bitnet.cpp's script name); see --help."""

import sys

from bitnet.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
