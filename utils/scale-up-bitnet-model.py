#!/usr/bin/env python3
"""Write a trained BitNet b1.58 GGUF in a bigger shape, zero padded to compute the same function (see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from bitnet.convert.scale_up import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
