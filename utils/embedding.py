#!/usr/bin/env python3
"""Text embeddings from a BitNet embedding model, with llama-embedding's flags (see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from bitnet.cli.embedding import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
