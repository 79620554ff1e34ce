#!/usr/bin/env python3
"""Perplexity of a GGUF model on a text, and KL divergence against saved reference logits
(llama.cpp's llama-perplexity, both modes); see --help and bitnet/perplexity.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitnet.perplexity import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
