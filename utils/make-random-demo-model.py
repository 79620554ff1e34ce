#!/usr/bin/env python3
"""Rebuild models/demo-random-i2_s.gguf: a tiny BitNet b1.58 model with random ternary weights
and a small byte-level BPE vocabulary, so that the quick start runs on any machine without a
download. It shows the pipeline, not prose. Needs the test extra (torch, transformers)."""

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bitnet.convert.hf_bitnet import convert  # noqa: E402
from tests.hf_models import make_bitnet_checkpoint  # noqa: E402


def main() -> int:
    out = REPO / "models" / "demo-random-i2_s.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_bitnet_checkpoint(Path(tmp), layout="packed", hidden_size=256, intermediate_size=512,
                                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, seed=2026)
        convert(ckpt, out, outtype="i2_s", token_embedding_type="f16", progress=False)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
