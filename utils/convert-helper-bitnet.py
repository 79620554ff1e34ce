#!/usr/bin/env python3
"""bitnet.cpp's helper: convert the Hugging Face BitNet checkpoint in DIR to DIR/ggml-model-i2_s.gguf."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from bitnet.convert.cli import helper_main

if __name__ == "__main__":
    sys.exit(helper_main(sys.argv[1:]))
