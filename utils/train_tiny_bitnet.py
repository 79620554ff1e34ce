#!/usr/bin/env python3
"""Train the tiny BitNet b1.58 demo model (models/) from text to GGUF; see --help and
bitnet/training/. Needs the test extra (torch, transformers, safetensors)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitnet.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
