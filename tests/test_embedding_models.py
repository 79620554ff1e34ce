"""BitNet embedding models (qwen3 / gemma3 rows): random checkpoints in the published layout ->
our converter -> engine embeddings, judged against an independent float64 PyTorch reference."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from bitnet import Model  # noqa: E402
from bitnet.convert.embedding_models import convert_embedding  # noqa: E402
from tests.embedding_fixture import Reference, make_embedding_checkpoint, repack_as_uint8  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["How many bits does a ternary weight take?", "What does rms_norm compute?", "Which dates are listed?"]
DOCUMENTS = [
    "Each weight takes about 1.58 bits, because log2(3) = 1.5849625.",
    "def rms_norm(x, weight, eps=1e-6): variance = (x * x).mean(-1, keepdim=True)",
    "Dates like 2025-04-16, times like 12:30:45, prices like $19.99 or 5 EUR, and 50% off.",
    "The quick brown fox jumps over the lazy dog.",
    "for (int i = 0; i < n; ++i) acc += a[i] * b[i];   // exact integer dot product",
]
FAMILIES = [("qwen3", "model."), ("gemma3_text", "")]  # both name layouts (with and without `model.`)


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def converted(request, tmp_path_factory):
    model_type, prefix = request.param
    d = make_embedding_checkpoint(tmp_path_factory.mktemp(model_type), model_type, seed=1, prefix=prefix)
    gguf = convert_embedding(d, d / "model-i2_s.gguf", "i2_s", progress=False)
    return d, gguf


def _embed_with_each_kernel_set(gguf, texts) -> tuple[dict, list]:
    from bitnet import engine

    before, out = engine.isa(), {}
    try:
        for isa in engine.available_isas():
            engine.set_isa(isa)
            with Model(gguf, n_threads=2, n_ctx=256) as m:
                out[isa] = m.embed(texts)
                ids = [m.embedding_token_ids(t) for t in texts]
    finally:
        engine.set_isa(before)
    return out, ids


def test_every_kernel_set_matches_the_reference_and_ranks_the_same(converted):
    d, gguf = converted
    texts = QUERIES + DOCUMENTS
    by_isa, ids = _embed_with_each_kernel_set(gguf, texts)
    ref, f32 = Reference(d), Reference(d, double=False)
    theirs = np.stack([ref.embed(i) for i in ids])
    torch_f32 = np.stack([f32.embed(i) for i in ids])
    for ours in by_isa.values():  # the dense kernels (attention) differ in their last bits
        assert ours.shape == (len(texts), 256)
        _check_against_reference(ours, theirs, torch_f32)


def _check_against_reference(ours, theirs, torch_f32):
    # DESIGN section 3: a value within float error of an int8 rounding boundary ("onset") may round
    # either way, and in a random model the flip then spreads. Our vectors must match the float64
    # reference to 1e-4 except at onsets, and have no more onsets than PyTorch's own float32.
    ours_off, f32_off = (ours * theirs).sum(1) < 0.9999, (torch_f32 * theirs).sum(1) < 0.9999
    assert ours_off.sum() <= max(1, f32_off.sum()), ((ours * theirs).sum(1), (torch_f32 * theirs).sum(1))
    assert (ours * theirs).sum(1).min() > 0.999  # an onset moves a vector by ~1e-4, a bug by far more
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-6)
    # The same ranking of the documents for every query, except between two documents whose
    # reference similarities are closer than our similarities' own distance from them (an onset
    # can reorder a near tie; random models are full of near ties).
    q, docs = len(QUERIES), slice(len(QUERIES), None)
    sim_ours, sim_ref = ours[:q] @ ours[docs].T, theirs[:q] @ theirs[docs].T
    for a, r in zip(sim_ours, sim_ref):
        slack = 2 * np.abs(a - r).max() + 1e-6
        for i in range(len(r)):
            for j in range(len(r)):
                if r[i] > r[j] + slack:
                    assert a[i] > a[j], (sim_ours, sim_ref)


def test_batch_composition_and_float_outtype_give_the_same_bits(converted):
    d, gguf = converted
    f32 = convert_embedding(d, d / "model-f32.gguf", "f32", progress=False)
    with Model(gguf, n_threads=2, n_ctx=256) as m, Model(f32, n_threads=1, n_ctx=256) as m32:
        together = m.embed(DOCUMENTS)
        alone = np.stack([m.embed([t])[0] for t in DOCUMENTS])
        assert np.array_equal(together, alone)
        assert np.array_equal(together, m32.embed(DOCUMENTS))
        ids = [m.embedding_token_ids(t) for t in DOCUMENTS[:2]]
        assert np.array_equal(m.embed(ids), together[:2])  # token-id lists too
        mean = m.embed(DOCUMENTS[:1], pooling="mean", normalize=-1)[0]
        hidden = m._embedder.hidden_states(ids[:1])[0]
        np.testing.assert_allclose(mean, hidden.mean(0), rtol=1e-5, atol=1e-6)


def test_packed_uint8_checkpoint_converts_to_the_same_file(converted, tmp_path):
    d, gguf = converted
    packed = repack_as_uint8(d, tmp_path / "packed")
    out = convert_embedding(packed, tmp_path / "packed.gguf", "i2_s", progress=False)
    from bitnet.convert.gguf_reader import read_gguf

    ta, tb = read_gguf(out).tensors, read_gguf(gguf).tensors
    assert list(ta) == list(tb) and all(np.array_equal(ta[n].data, tb[n].data) for n in ta)


def test_gguf_keys_and_tokens(converted):
    from bitnet.convert.gguf_reader import read_gguf

    d, gguf = converted
    g = read_gguf(gguf)
    arch = g.kv["general.architecture"]
    assert g.kv[f"{arch}.attention.key_length"] == 128
    assert g.kv[f"{arch}.pooling_type"] == 3  # last token (no sentence-transformers Pooling module)
    names = set(g.tensors)
    assert "blk.0.attn_q_norm_in.weight" in names and "blk.0.ffn_down_norm_in.weight" in names
    if arch == "gemma3":
        assert "blk.0.post_ffw_norm.weight" in names and g.kv["gemma3.attention.sliding_window"] == 4
    else:
        assert g.kv["tokenizer.ggml.add_eos_token"] is True


def test_embedding_cli(converted):
    d, gguf = converted
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "utils" / "embedding.py"), *a], capture_output=True,
                                    text=True, cwd=ROOT, timeout=120)  # fmt: skip
    r = run("-m", str(gguf), "-p", "hello world", "--embd-output-format", "json", "-t", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    vec = np.array(out["data"][0]["embedding"])
    with Model(gguf, n_threads=1, n_ctx=256) as m:
        np.testing.assert_allclose(vec, m.embed(["hello world"])[0], rtol=1e-6, atol=1e-7)
    r = run("-m", str(gguf), "-p", "a\nb", "--embd-normalize", "-1", "--embd-separator", "\n",
            "--embd-output-format", "array")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 2
    r = run("-m", str(d / "missing.gguf"), "-p", "x")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_converter_cli_and_bad_input(tmp_path, converted):
    d, _ = converted
    script = ROOT / "utils" / "convert-bitnet-embedding-to-gguf.py"
    out = tmp_path / "x.gguf"
    r = subprocess.run([sys.executable, str(script), str(d), "--outtype", "i2_s", "--outfile", str(out)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and out.is_file(), r.stderr
    r = subprocess.run([sys.executable, str(script), str(d), "--outtype", "tq2_0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ")
    cfg = json.loads((d / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(dict(cfg, model_type="llama", architectures=["LlamaForCausalLM"])))
    r = subprocess.run([sys.executable, str(script), str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "not a BitNet embedding backbone" in r.stderr


def test_embeddings_endpoint_through_openai_client(converted):
    pytest.importorskip("openai")
    from tests.test_server_support import live_server

    _, gguf = converted
    with Model(gguf, n_threads=1, n_ctx=256) as m:
        expected = m.embed(DOCUMENTS[:3])
        ids = m.embedding_token_ids(DOCUMENTS[0])
    with live_server(gguf, alias="embed") as server:
        client = server.openai()
        r = client.embeddings.create(model="embed", input=DOCUMENTS[:3])
        got = np.array([d.embedding for d in r.data], dtype=np.float32)
        np.testing.assert_array_equal(got, expected)
        assert [d.index for d in r.data] == [0, 1, 2] and r.usage.prompt_tokens == r.usage.total_tokens > 0
        r = client.embeddings.create(model="embed", input=DOCUMENTS[0], encoding_format="base64")
        np.testing.assert_array_equal(np.frombuffer(base64.b64decode(r.data[0].embedding), "<f4"), expected[0])
        r = client.embeddings.create(model="embed", input=ids)  # a token list
        np.testing.assert_array_equal(np.array(r.data[0].embedding, dtype=np.float32), expected[0])
        assert r.usage.prompt_tokens == len(ids)
        with server.client() as http:
            for bad in ({"input": []}, {"input": "x", "encoding_format": "int8"}, {"input": [[10**6]]},
                        {"input": "x", "dimensions": 3}, {"input": "word " * 400}):  # fmt: skip
                resp = http.post("/v1/embeddings", json=bad)
                assert resp.status_code == 400, (bad, resp.text)
                assert resp.json()["error"]["message"]


def test_setup_env_md_converts_an_embedding_checkpoint(tmp_path):
    from tests.test_families_setup import run_setup

    d = make_embedding_checkpoint(tmp_path / "bitnet-embedding-0.6b", "qwen3", seed=2)
    r = run_setup("-md", d)
    assert r.returncode == 0, r.stderr
    assert "utils/embedding.py" in r.stderr
    with Model(d / "ggml-model-i2_s.gguf", n_threads=1, n_ctx=64) as m:
        assert m.native.arch == "qwen3" and m.embed(["hi"]).shape == (1, 256)


@pytest.mark.parametrize("size", ["embedding-0.6b", "embedding-270m"])
def test_dummy_models_and_embedding_benchmark(tmp_path, size):
    out = tmp_path / f"{size}.gguf"
    gen = ROOT / "utils" / "generate-dummy-bitnet-model.py"
    args = [str(out), "--model-size", size, "--n-layers", "2", "--vocab-size", "4096", "--no-progress"]
    r = subprocess.run([sys.executable, str(gen), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with Model(out, n_threads=1, n_ctx=64) as m:
        assert m.native.arch == ("qwen3" if size.endswith("0.6b") else "gemma3")
        e = m.embed(["one text", "another one"])
        assert e.shape == (2, 1024 if size.endswith("0.6b") else 640) and np.isfinite(e).all()
    bench = ROOT / "utils" / "e2e_benchmark.py"
    r = subprocess.run([sys.executable, str(bench), "-m", str(out), "--embedding", "-t", "1", "-r", "1",
                        "--embd-batch", "2", "--embd-tokens", "8", "--json"], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["texts_per_s"] > 0 and rec["tokens_per_s"] == pytest.approx(8 * rec["texts_per_s"])


def test_files_the_engine_refuses(converted, tmp_path):
    from bitnet.errors import BitnetError
    from tests.gguf_rebuild import rebuild_gguf

    _, gguf = converted
    arch = Model(gguf, n_threads=1, n_ctx=16).native.arch
    cases = {
        "bidirectional": dict(set_kv={f"{arch}.attention.causal": (False, "bool")}),
        "missing q norm": dict(drop=("blk.1.attn_q_norm.weight",)),
        "value length": dict(set_kv={f"{arch}.attention.value_length": (64, "u32")}),
    }
    for what, edit in cases.items():
        bad = rebuild_gguf(gguf, tmp_path / f"{what}.gguf", **edit)
        with pytest.raises(BitnetError) as err:
            Model(bad, n_threads=1, n_ctx=16)
        assert len(str(err.value).splitlines()) == 1, what
        assert {"bidirectional": "bidirectional", "missing q norm": "attn_q_norm",
                "value length": "value_length"}[what] in str(err.value)  # fmt: skip


def test_texts_longer_than_one_batch(converted):
    d, gguf = converted
    long_text = " ".join(DOCUMENTS) * 3  # > 512 tokens: split over two engine batches
    with Model(gguf, n_threads=2, n_ctx=1024) as m:
        ids = m.embedding_token_ids(long_text)
        assert 512 < len(ids) <= 1024
        together = m.embed([DOCUMENTS[0], long_text, DOCUMENTS[1]])
        assert np.array_equal(together[1], m.embed([long_text])[0])
    f64, f32 = Reference(d).embed(ids), Reference(d, double=False).embed(ids)
    # Over 500+ positions an int8 rounding onset (DESIGN section 3) is likely: where PyTorch's own
    # float32 run parts from float64, ours may too (by as little); otherwise ours must not.
    assert float(together[1] @ f64) > (0.999 if float(f32 @ f64) < 0.9999 else 0.9999)


def test_gemma_sentencepiece_tokenizer_matches_sentencepiece(converted):
    d, gguf = converted
    if not (d / "tokenizer.model").is_file():
        pytest.skip("not a SentencePiece tokenizer")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    texts = ["Numbers 12345 and 3.14159!", " leading space", "  two  spaces\n\nnew lines", *DOCUMENTS, "ünïcödé ✓"]
    with Model(gguf, n_threads=1, n_ctx=256) as m:
        for t in texts:
            assert m.embedding_token_ids(t) == [sp.bos_id(), *sp.encode(t)], t


def test_qwen2_tokenizer_matches_hugging_face(converted):
    from tokenizers import Tokenizer as HFTokenizer

    d, gguf = converted
    if Model(gguf, n_threads=1, n_ctx=16).metadata.get("tokenizer.ggml.pre") != "qwen2":
        pytest.skip("not a Qwen tokenizer")
    hf = HFTokenizer.from_file(str(d / "tokenizer.json"))
    texts = ["Numbers 12345 and 3.14159!", "cafe\u0301 vs caf\u00e9", "  two  spaces\n\nnew lines\r\n", *DOCUMENTS,
             "<|endoftext|> special", "I'll say it's 2025-04-16"]  # fmt: skip
    with Model(gguf, n_threads=1, n_ctx=256) as m:
        for t in texts:
            assert m.tokenize(t) == hf.encode(t).ids, t
            assert m.embedding_token_ids(t) == hf.encode(t).ids + [hf.token_to_id("<|endoftext|>")]


def test_bad_inputs_are_one_line_errors(converted):
    from bitnet.errors import BitnetError

    _, gguf = converted
    with Model(gguf, n_threads=1, n_ctx=32) as m:
        assert np.array_equal(m.embed([b"hello"]), m.embed(["hello"]))  # bytes are UTF-8 text
        assert m.embed([]).shape == (0, 256)
        for bad, msg in (([[1.5]], "integer token ids"), ([[10**7]], "out of range"), ([[]], "empty"),
                         (["word " * 40], "context holds 32"), (["x"], None)):  # fmt: skip
            if msg is None:
                with pytest.raises(BitnetError, match="unknown pooling"):
                    m.embed(bad, pooling="max")
                continue
            with pytest.raises(BitnetError, match=msg):
                m.embed(bad)
