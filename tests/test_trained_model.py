"""The trained demo model that ships in models/ (utils/train_tiny_bitnet.py): it is the default,
it writes English, and our engine computes what transformers computes on its checkpoint:
perplexity on the held-out text to 3 significant digits, and the same greedy tokens (DESIGN.md
section 3: identical, or parted at a near tie)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet import Model, perplexity
from bitnet.model import DEFAULT_MODEL
from tests.hf_models import load_reference

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models" / "bitnet-b1.58-austen-5M"
GGUF = MODEL_DIR / "ggml-model-i2_s.gguf"
HELDOUT = MODEL_DIR / "heldout.txt"
NEAR_TIE = 0.02  # as tests/test_e2e.py: greedy may part where the reference's top two are this close
PROMPTS = ["It is a truth universally acknowledged", "Elizabeth", "\"My dear Mr. Bennet,\" said his lady",
           "The weather was fine, and", "She had never been so"]  # fmt: skip
N_CTX = 512


@pytest.fixture(scope="module")
def shipped():
    with Model(GGUF, n_threads=1) as m:  # tiny: one thread is plenty
        yield m


@pytest.fixture(scope="module")
def hf_logits():
    import torch

    model = load_reference(MODEL_DIR)

    def logits(batch):
        """ids [t] -> [t, vocab], or a batch of windows [n, t] -> [n, t, vocab] in one pass."""
        ids = torch.tensor(np.asarray(batch, dtype=np.int64))
        with torch.no_grad():
            out = model(ids[None] if ids.ndim == 1 else ids).logits.float().numpy()
        return out[0] if ids.ndim == 1 else out

    return logits


def test_the_default_model_is_the_shipped_one():
    assert DEFAULT_MODEL == GGUF and GGUF.is_file()
    assert GGUF.stat().st_size < 6 << 20  # small enough to live in the repository
    with Model() as m:
        assert m.model_path == str(GGUF) and m.n_vocab == 4096


def test_it_writes_english(shipped):
    """Greedy text from the prompts is made of the novels' words, and not one phrase on repeat."""
    known = set(re.findall(r"[a-z]+", HELDOUT.read_text(encoding="utf-8").lower()))
    for prompt in PROMPTS[:3]:
        text = shipped.generate(prompt, max_tokens=40, temperature=0)
        words = re.findall(r"[a-z]+", text.lower())
        assert len(words) >= 15 and len(set(words)) >= 12, text
        assert sum(w in known for w in words) >= 0.8 * len(words), text


def test_heldout_perplexity_equals_transformers(shipped, hf_logits):
    windows = perplexity.make_windows(shipped.tokenize(HELDOUT.read_text(encoding="utf-8")), N_CTX,
                                      shipped.tokenizer.bos_id)  # fmt: skip
    ours = perplexity.evaluate(lambda w: shipped.logits(w.tolist()), windows).perplexity()[0]
    batch = dict(zip(map(bytes, windows), hf_logits(windows)))  # one pass over all windows
    ref = perplexity.evaluate(lambda w: batch[bytes(w)], windows).perplexity()[0]
    assert f"{ours:.3g}" == f"{ref:.3g}", (ours, ref)
    trained = json.loads((MODEL_DIR / "training.json").read_text())["final"]["heldout_loss"]
    assert abs(np.log(ours) - trained) < 0.01  # what training measured (before the f16 embedding)
    assert ours < 100  # a trained model: chance would be 4096


def test_greedy_continuations_match_transformers(shipped, hf_logits):
    for prompt in PROMPTS:
        ids = shipped.tokenize(prompt)
        ours = list(shipped.generate_tokens(ids, max_tokens=32, temperature=0.0))
        ref = hf_logits(ids + ours)[len(ids) - 1 :]
        for step, token in enumerate(ours):
            row = ref[step]
            if int(np.argmax(row)) != token:
                top2 = np.sort(row)[-2:]
                assert top2[1] - top2[0] <= NEAR_TIE * np.abs(row).max(), (prompt, step)
                break  # parted at a near tie: the rest follows a different history


def test_run_inference_uses_it_without_m():
    prompt = "It is a truth universally acknowledged"
    proc = subprocess.run([sys.executable, str(REPO / "run_inference.py"), "-p", prompt, "-n", "24", "-temp", "0",
                           "-t", "1"], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(prompt) and len(proc.stdout.split()) > len(prompt.split()) + 10, proc.stdout
