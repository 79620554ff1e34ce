"""Tokenizer: HF tokenizer dir -> GGUF tokenizer fields -> JSON -> bitnet.tokenizer.Tokenizer,
checked against Hugging Face `tokenizers` and transformers on the same files."""

from __future__ import annotations

import json

import pytest
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

from bitnet.convert.tokenizer_meta import gguf_tokenizer_fields
from bitnet.errors import BitnetError
from bitnet.tokenizer import Tokenizer
from tests.tokenizer_fixture import EOS_TOKEN, SPECIAL_TOKENS, write_test_tokenizer

TEXTS = [
    "",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé Zürich São Paulo Ångström œuvre",
    "中文：你好，世界！日本語：こんにちは。한국어: 안녕하세요",
    "Emoji 😀🎉🚀 ❤️ 👍🏽 🇺🇸 and a ZWJ family 👨‍👩‍👧",
    "Numbers 1234567 3.14159 -17 +23 1e-5 0x1F 2025-04-16 $19.99 50%",
    "spaces   runs    of     them  and trailing   ",
    "   leading spaces",
    "tabs\tand\t\tcolumns\nnew lines\n\n\nCRLF\r\nend\r\n",
    "def f(x):\n    return x ** 2  # square\n\tif x != None: print(f'{x=}')",
    "for (int i = 0; i < n; ++i) { acc += a[i] * b[i]; }",
    "I'm sure they'll say you're right, it's fine, we've won, I'd go, don't.",
    "IT'S LOUD, YOU'RE LOUD, THEY'LL SHOUT",
    "<|begin_of_text|>System: hi<|eot_id|>User: yo<|eot_id|>Assistant: ",
    "text with <|eot_id|> inside and <|end_of_text|> and a fake <|not_a_token|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "Русский текст, Ελληνικά, עברית, العربية",
    "unknown bytes \x00\x01\x7f and control \u200b zero-width",
    "a" * 300 + " " + "ab" * 100,
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    write_test_tokenizer(d)
    return d


def meta_from_dir(path, **kwargs) -> dict:
    """GGUF fields as the engine hands them to Python: through JSON (arrays become lists)."""
    return json.loads(json.dumps({key: value for key, value, _ in gguf_tokenizer_fields(path, **kwargs)}))


@pytest.fixture(scope="module")
def ours(tok_dir):
    return Tokenizer.from_gguf_metadata(meta_from_dir(tok_dir))


@pytest.fixture(scope="module")
def hf(tok_dir):
    return HFTokenizer.from_file(str(tok_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def auto(tok_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir))


def hf_encode_plain(hf, text):
    """HF ids with special-token text split like ordinary text."""
    hf.encode_special_tokens = True
    try:
        return hf.encode(text, add_special_tokens=False).ids
    finally:
        hf.encode_special_tokens = False


# --- fields written by the converter ---------------------------------------------------------


def test_fixture_is_deterministic(tmp_path):
    n1 = write_test_tokenizer(tmp_path / "a")
    n2 = write_test_tokenizer(tmp_path / "b")
    assert n1 == n2 == 512 + len(SPECIAL_TOKENS)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_fields_kinds_and_values(tok_dir, hf):
    fields = gguf_tokenizer_fields(tok_dir)
    kinds = {key: kind for key, _, kind in fields}
    values = {key: value for key, value, _ in fields}
    assert len(kinds) == len(fields)
    assert kinds == {
        "tokenizer.ggml.model": "string",
        "tokenizer.ggml.pre": "string",
        "tokenizer.ggml.tokens": "string_array",
        "tokenizer.ggml.token_type": "i32_array",
        "tokenizer.ggml.merges": "string_array",
        "tokenizer.ggml.bos_token_id": "u32",
        "tokenizer.ggml.eos_token_id": "u32",
        "tokenizer.ggml.eot_token_id": "u32",
        "tokenizer.ggml.add_bos_token": "bool",
        "tokenizer.chat_template": "string",
    }
    assert values["tokenizer.ggml.model"] == "gpt2" and values["tokenizer.ggml.pre"] == "llama-bpe"
    tokens, types = values["tokenizer.ggml.tokens"], values["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == hf.get_vocab_size()
    assert tokens == [hf.id_to_token(i) for i in range(len(tokens))]
    assert types == [3 if t in SPECIAL_TOKENS else 1 for t in tokens]
    assert values["tokenizer.ggml.bos_token_id"] == hf.token_to_id("<|begin_of_text|>")
    assert values["tokenizer.ggml.eos_token_id"] == hf.token_to_id(EOS_TOKEN)  # 2B-4T: eos is <|eot_id|>
    assert values["tokenizer.ggml.eot_token_id"] == hf.token_to_id("<|eot_id|>")
    assert values["tokenizer.ggml.add_bos_token"] is True
    raw = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert values["tokenizer.ggml.merges"] == [" ".join(pair) for pair in raw]


def test_merges_as_strings_give_the_same_fields(tok_dir, tmp_path):
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_bytes((tok_dir / "tokenizer_config.json").read_bytes())
    assert gguf_tokenizer_fields(tmp_path) == gguf_tokenizer_fields(tok_dir)


def test_eos_from_generation_config_and_pad(tok_dir, tmp_path):
    data = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    del data["eos_token"]
    data["pad_token"] = {"content": "<|reserved_special_token_0|>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "tokenizer.json").write_bytes((tok_dir / "tokenizer.json").read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [513, 521]}), encoding="utf-8")
    values = {key: value for key, value, _ in gguf_tokenizer_fields(tmp_path)}
    assert values["tokenizer.ggml.eos_token_id"] == 513
    assert values["tokenizer.ggml.padding_token_id"] == 514


def test_padding_to_model_vocab(tok_dir, ours):
    n = ours.n_vocab
    meta = meta_from_dir(tok_dir, n_vocab=n + 6)
    assert meta["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 6)]
    assert meta["tokenizer.ggml.token_type"][n:] == [5] * 6
    padded = Tokenizer.from_gguf_metadata(meta)
    assert padded.n_vocab == n + 6
    assert padded.token_to_bytes(n + 3) == b""
    for text in TEXTS:
        assert padded.encode(text, special=False) == ours.encode(text, special=False)
    assert padded.encode("[PAD522]", add_bos=False) == ours.encode("[PAD522]", add_bos=False)
    with pytest.raises(ValueError, match="smaller"):
        gguf_tokenizer_fields(tok_dir, n_vocab=n - 1)


# --- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_hf(ours, hf, auto, text):
    expected = hf.encode(text).ids  # post-processor adds <|begin_of_text|>
    assert ours.encode(text) == expected
    assert ours.encode(text) == auto(text)["input_ids"]
    assert ours.encode(text, add_bos=False) == hf.encode(text, add_special_tokens=False).ids
    assert ours.encode(text, add_bos=False, special=False) == hf_encode_plain(hf, text)
    assert ours.encode(text, special=False) == auto(text, split_special_tokens=True)["input_ids"]


def test_special_tokens_matched_only_when_asked(ours):
    eot = ours.eot_id
    assert ours.encode("a<|eot_id|>b", add_bos=False).count(eot) == 1
    assert eot not in ours.encode("a<|eot_id|>b", add_bos=False, special=False)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trip(ours, hf, text):
    ids = ours.encode(text)
    assert ours.decode(ids[1:]) == text
    assert ours.decode(ids) == "<|begin_of_text|>" + text
    assert ours.decode(ids, skip_special=True) == hf.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False)
    plain = ours.encode(text, add_bos=False, special=False)
    assert ours.decode(plain) == text


@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_concatenate_to_text(ours, text):
    ids = ours.encode(text, add_bos=False)
    assert b"".join(ours.token_to_bytes(i) for i in ids) == ours.decode(ids).encode("utf-8")


def test_partial_utf8_tokens(ours, hf):
    ids = ours.encode("😀", add_bos=False)
    assert len(ids) > 1  # the tiny vocab splits the emoji inside its UTF-8 bytes
    pieces = [ours.token_to_bytes(i) for i in ids]
    assert b"".join(pieces) == "😀".encode()
    for i in ids:  # a lone fragment decodes like HF's ByteLevel decoder: U+FFFD
        assert ours.decode([i]) == hf.decode([i])


def test_eog_and_special_ids(ours, hf):
    eot, end = hf.token_to_id("<|eot_id|>"), hf.token_to_id("<|end_of_text|>")
    assert ours.bos_id == hf.token_to_id("<|begin_of_text|>")
    assert ours.eos_id == ours.eot_id == eot
    assert ours.eog_ids == frozenset({eot, end})
    assert ours.is_eog(end) and ours.is_eog(eot) and not ours.is_eog(ours.bos_id)
    assert not ours.is_eog(ours.encode("Hello", add_bos=False)[0])
    assert len(ours) == ours.n_vocab == hf.get_vocab_size()


def test_bad_ids_are_refused(ours):
    for bad in (-1, ours.n_vocab, 10**9):
        with pytest.raises(BitnetError, match="outside the vocab"):
            ours.decode([1, bad])
        with pytest.raises(BitnetError, match="outside the vocab"):
            ours.token_to_bytes(bad)
    with pytest.raises(BitnetError, match="not an integer"):
        ours.decode([1.5])
    with pytest.raises(BitnetError):
        ours.encode(b"bytes")


def test_add_bos_token_false(tok_dir, ours):
    meta = meta_from_dir(tok_dir)
    meta["tokenizer.ggml.add_bos_token"] = False
    no_bos = Tokenizer.from_gguf_metadata(meta)
    assert no_bos.encode("Hello") == ours.encode("Hello", add_bos=False)


def _hf_variant(tok_dir, tmp_path, add):
    """The fixture with extra added tokens, saved as a new tokenizer dir."""
    hf = HFTokenizer.from_file(str(tok_dir / "tokenizer.json"))
    add(hf)
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_bytes((tok_dir / "tokenizer_config.json").read_bytes())
    return hf


VARIANT_TEXTS = ["say hello zebra<tool> and <tool>x", "zebra zebra", "<|eot_id|>zebra<tool>", *TEXTS[:8]]


def test_user_defined_tokens(tok_dir, tmp_path):
    hf = _hf_variant(tok_dir, tmp_path, lambda h: h.add_tokens([AddedToken("<tool>", normalized=False)]))
    meta = meta_from_dir(tmp_path)
    assert meta["tokenizer.ggml.token_type"][-1] == 4
    tok = Tokenizer.from_gguf_metadata(meta)
    for text in VARIANT_TEXTS:
        assert tok.encode(text) == hf.encode(text).ids
        assert tok.encode(text, add_bos=False, special=False) == hf_encode_plain(hf, text)
        assert tok.decode(tok.encode(text, add_bos=False)) == text


@pytest.mark.parametrize("word", ["zebra", "Ġhi"])
def test_control_token_that_is_a_whole_word(tok_dir, tmp_path, word):
    # "zebra", and "Ġhi" (byte-level spelling of " hi"), are single pre-tokens: with special
    # tokens as plain text they must go through BPE as HF does, not hit the control token.
    hf = _hf_variant(tok_dir, tmp_path, lambda h: h.add_special_tokens([AddedToken(word, normalized=False)]))
    tok = Tokenizer.from_gguf_metadata(meta_from_dir(tmp_path))
    control = hf.token_to_id(word)
    assert tok.encode(word, add_bos=False) == [control]
    for text in [*VARIANT_TEXTS, "say hi there", " hi", "Ġhi"]:
        assert tok.encode(text) == hf.encode(text).ids
        assert tok.encode(text, add_bos=False, special=False) == hf_encode_plain(hf, text)
    assert control not in tok.encode(f"{word} hi", special=False)


# --- refusals ----------------------------------------------------------------------------------


def test_unsupported_models_in_gguf(tok_dir):
    meta = meta_from_dir(tok_dir)
    with pytest.raises(BitnetError, match="tokenizer model 't5' is not supported"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.model": "t5"})
    with pytest.raises(BitnetError, match="'deepseek-llm' is not supported yet"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.pre": "deepseek-llm"})
    with pytest.raises(BitnetError, match="token_type"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.token_type": [1, 1]})
    with pytest.raises(BitnetError, match="merges"):
        Tokenizer.from_gguf_metadata({k: v for k, v in meta.items() if k != "tokenizer.ggml.merges"})
    with pytest.raises(BitnetError, match="outside the vocab"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.eos_token_id": 10**6})
    with pytest.raises(BitnetError, match="inconsistent"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.merges": ["Ġ nonexistent_token"]})


def test_pre_missing_is_llama3(tok_dir, ours):
    meta = meta_from_dir(tok_dir)
    del meta["tokenizer.ggml.pre"]
    assert Tokenizer.from_gguf_metadata(meta).encode(TEXTS[12]) == ours.encode(TEXTS[12])


def test_unsupported_hf_tokenizers(tok_dir, tmp_path):
    unigram = {"model": {"type": "Unigram", "vocab": [["<unk>", 0.0]], "unk_id": 0}, "added_tokens": []}
    (tmp_path / "tokenizer.json").write_text(json.dumps(unigram), encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer model 'Unigram' is not supported yet"):
        gguf_tokenizer_fields(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.model").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="SentencePiece.*not supported yet"):
        gguf_tokenizer_fields(tmp_path)
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="pre-tokenizer .* not supported yet"):
        gguf_tokenizer_fields(tmp_path)
