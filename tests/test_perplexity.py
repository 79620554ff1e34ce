"""Perplexity and KL divergence (bitnet/perplexity.py, utils/perplexity.py): llama-perplexity's
chunking, the numbers against a direct computation and against transformers, the KL base file."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet import perplexity as ppl

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "utils" / "perplexity.py"
DEMO = REPO / "models" / "bitnet-b1.58-austen-5M"  # the trained demo model: real structure, real PPL
CTX, CHUNKS = 128, 4
TEXT = "Once upon a time, in a small village by the sea, there lived an old fisherman and his daughter. " * 12


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, check=False)  # fmt: skip


def test_windows_follow_llama_perplexity():
    ids = list(range(100, 123))  # 23 tokens, windows of 8: 2 full windows, the rest dropped
    w = ppl.make_windows(ids, 8, bos_id=1)
    assert w.tolist() == [[1, *range(101, 108)], [1, *range(109, 116)]]
    assert ppl.make_windows(ids, 8, bos_id=None)[1, 0] == 108
    assert ppl.make_windows(ids, 8, 1, max_chunks=1).shape == (1, 8)
    assert ppl.scored_rows(8) == slice(4, 7) and ppl.n_scored(8) == 3  # logits 4..6 predict tokens 5..7
    with pytest.raises(ValueError, match="fewer than one window"):
        ppl.make_windows(ids[:7], 8, 1)


def test_window_nll_is_the_next_token_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 11)).astype(np.float32) * 5
    window = rng.integers(0, 11, size=8)
    z = logits.astype(np.float64)
    expected = [math.log(np.exp(z[j]).sum()) - z[j, window[j + 1]] for j in (4, 5, 6)]
    np.testing.assert_allclose(ppl.window_nll(logits, window), expected, rtol=1e-12)


def test_kl_of_a_model_with_itself_is_zero_and_agreement_total():
    rng = np.random.default_rng(1)
    windows = rng.integers(0, 50, size=(3, 16)).astype(np.int32)
    table = {tuple(w): rng.standard_normal((16, 50)).astype(np.float32) for w in windows}
    base = np.stack([table[tuple(w)][ppl.scored_rows(16)] for w in windows])
    report = ppl.evaluate(lambda w: table[tuple(w)], windows, base)
    assert max(k.max() for k in report.kld) < 1e-12
    assert all(s.all() for s in report.same_top)
    shifted = ppl.evaluate(lambda w: table[tuple(w)] * 1.5, windows, base)  # sharper: KL > 0
    assert min(k.min() for k in shifted.kld) > 0


@pytest.fixture(scope="module")
def demo_windows():
    """The first windows of the demo model's held-out text (tokenized by our engine)."""
    from bitnet import Model

    with Model(DEMO / "ggml-model-i2_s.gguf", n_threads=1) as m:
        ids = m.tokenize((DEMO / "heldout.txt").read_text(encoding="utf-8"))
        yield ppl.make_windows(ids, CTX, m.tokenizer.bos_id, max_chunks=CHUNKS)


@pytest.fixture(scope="module")
def demo_hf():
    """transformers on the demo model's checkpoint, as --hf-reference runs it."""
    return ppl.TransformersScorer(DEMO)


def test_script_perplexity_is_the_apis(demo_windows):
    """The script's windows and PPL are those of bitnet.perplexity on our engine's logits, exactly.
    (Against transformers on the whole held-out text: tests/test_trained_model.py.)"""
    from bitnet import Model

    with Model(DEMO / "ggml-model-i2_s.gguf", n_threads=1) as m:
        expected = ppl.evaluate(lambda w: m.logits(w.tolist()), demo_windows).perplexity()[0]
    proc = run("-m", DEMO / "ggml-model-i2_s.gguf", "-f", DEMO / "heldout.txt", "-c", CTX, "--chunks", CHUNKS,
               "-t", 1, "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(proc.stdout)
    assert ours["n_chunks"] == CHUNKS and ours["n_scored"] == CHUNKS * ppl.n_scored(CTX)
    assert ours["perplexity"] == expected
    assert 1 < ours["perplexity"] < 200  # a trained model (chance: 4096)


def test_hf_reference_flag(demo_windows, demo_hf, capsys):
    """--hf-reference (in process: transformers is already loaded) scores the same windows as the
    TransformersScorer it runs, and tokenizes as our engine does."""
    code = ppl.main(["--hf-reference", str(DEMO), "-f", str(DEMO / "heldout.txt"), "-c", str(CTX),
                     "--chunks", str(CHUNKS), "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["perplexity"] == pytest.approx(ppl.evaluate(demo_hf.logits, demo_windows).perplexity()[0], rel=1e-9)


def test_kl_divergence_against_saved_transformers_logits(demo_windows, demo_hf, tmp_path):
    """A KL base written from transformers' logits, read back by the script against our engine."""
    rows = ppl.scored_rows(CTX)
    base = tmp_path / "hf-base.npz"
    ppl.save_kl_base(base, demo_windows, np.stack([demo_hf.logits(w)[rows] for w in demo_windows]))
    proc = run("-m", DEMO / "ggml-model-i2_s.gguf", "--kl-base", base, "--kl-divergence", "-t", 1, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # transformers against itself (sdpa vs eager attention, the same int8 rounding flips a different
    # float order causes): mean KLD 6e-5 here and 1.1e-4 over the held-out text, top-1 99.1%.
    assert out["mean_kld"] < 5e-4 and out["same_top"] >= 0.98, out
    assert out["reference_perplexity"] == pytest.approx(ppl.evaluate(demo_hf.logits, demo_windows).perplexity()[0])


def test_saved_base_round_trip_through_the_script(tiny_gguf, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    base = tmp_path / "base.npz"
    first = run("-m", tiny_gguf, "-f", text, "-c", 32, "-t", 2, "--kl-base", base, "--json")
    assert first.returncode == 0, first.stderr
    windows, logits = ppl.load_kl_base(base)
    assert windows.shape[1] == 32 and logits.shape[:2] == (len(windows), ppl.n_scored(32))
    again = run("-m", tiny_gguf, "--kl-base", base, "--kl-divergence", "-t", 1, "--json")
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["mean_kld"] == 0.0 and out["same_top"] == 1.0  # thread count changes nothing
    assert out["perplexity"] == json.loads(first.stdout)["perplexity"]


@pytest.mark.parametrize("args, code", [
    (("--kl-divergence",), 2),                     # no base file
    (("-c", "2", "-f", "x.txt"), 2),               # context too small for a window
    (("-f", "missing.txt"), 1),
    (("--kl-base", "README.md", "--kl-divergence"), 1),  # not a base file
])  # fmt: skip
def test_errors_are_one_line(tiny_gguf, args, code):
    proc = run("-m", tiny_gguf, *args)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_text_shorter_than_a_window_fails_cleanly(tiny_gguf, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Hello.", encoding="utf-8")
    proc = run("-m", tiny_gguf, "-f", short, "-c", 64)
    assert proc.returncode == 1 and "fewer than one window" in proc.stderr
