#!/usr/bin/env python3
"""The int8-activation head's quality cost on a text: perplexity exact vs int8, KL, top-1
agreement (bitnet/head_act_quality.py; see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitnet.head_act_quality import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
