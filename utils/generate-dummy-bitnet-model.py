#!/usr/bin/env python3
"""Write a BitNet b1.58 GGUF with random ternary weights in a real model's shape (see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from bitnet.convert.dummy import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
