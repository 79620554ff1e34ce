#!/usr/bin/env python3
"""Convert a BitNet embedding checkpoint (bitnet-embedding-0.6b / -270m) to GGUF (see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from bitnet.convert.embedding_cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
