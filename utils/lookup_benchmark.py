#!/usr/bin/env python3
"""Prompt-lookup speculative decoding vs plain greedy decoding, tokens/s in one run; see --help
and bitnet/lookup_bench.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitnet.lookup_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
