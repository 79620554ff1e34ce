"""Tokenizers of every family, rebuilt from GGUF metadata, against independent implementations:
SentencePiece itself for 1bitLLM's tokenizer.model (byte fallback, whitespace, special tokens), and
Hugging Face tokenizers for the Llama-3 / Falcon3 / Falcon-E byte-level BPE under every
pre-tokenizer name their GGUF files use. Chat templates of the families render as transformers'
apply_chat_template does."""

from __future__ import annotations

import json
import re

import pytest
from tokenizers import Tokenizer as HFTokenizer

from bitnet.chat import render_chat
from bitnet.convert.tokenizer_meta import gguf_tokenizer_fields
from bitnet.errors import BitnetError
from bitnet.tokenizer import Tokenizer
from tests.hf_families import SPM_VOCAB, write_spm_tokenizer
from tests.test_tokenizer import TEXTS
from tests.tokenizer_fixture import write_test_tokenizer

spm = pytest.importorskip("sentencepiece")

SPM_TEXTS = [
    *(t for t in TEXTS if "<|" not in t),
    " ", "  ", "\n", "x", " x", "x ", "a  b   c    d", "\t\tindented\n\t\tcode", "trailing newline\n",
    "ð þ ß ŋ ħ — rare letters fall back to bytes: ꙮ 𓀀 🦀", "日本語のテキストと漢字", "Ǆǅǆ ﬁ ﬂ ligatures",
    "1234567890 digits split one by one", "CamelCaseWordsAndALLCAPS snake_case_words", "end.",
]  # fmt: skip
SPECIAL_TEXTS = ["<s>", "</s>hello", "a<s>b</s>c", "Hi</s> <s> there", "<pad> and <unk> and <s >", "x</s>"]


def meta_of(path, **kwargs) -> dict:
    """GGUF fields as the engine hands them to Python: through JSON (arrays become lists)."""
    return json.loads(json.dumps({key: value for key, value, _ in gguf_tokenizer_fields(path, **kwargs)}))


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("spm")
    write_spm_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def sp(spm_dir):
    return spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))


@pytest.fixture(scope="module")
def ours(spm_dir):
    return Tokenizer.from_gguf_metadata(meta_of(spm_dir, n_vocab=SPM_VOCAB + 2, kind="spm"))


def test_spm_fields(spm_dir, sp):
    meta = meta_of(spm_dir, n_vocab=SPM_VOCAB + 2, kind="spm")
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_space_prefix"] is True
    tokens, scores, types = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    assert len(tokens) == len(scores) == len(types) == SPM_VOCAB + 2
    for i in range(SPM_VOCAB):
        assert tokens[i] == sp.id_to_piece(i) and scores[i] == pytest.approx(sp.get_score(i))
        expected = 6 if sp.is_byte(i) else 3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 1
        assert types[i] == expected, tokens[i]
    assert tokens[SPM_VOCAB:] == ["<pad>", f"[PAD{SPM_VOCAB + 1}]"] and types[SPM_VOCAB:] == [3, 5]
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.ggml.unknown_token_id"] == 0 and meta["tokenizer.ggml.padding_token_id"] == SPM_VOCAB
    assert meta["tokenizer.ggml.add_bos_token"] is True


@pytest.mark.parametrize("text", SPM_TEXTS)
def test_spm_ids_equal_sentencepiece(ours, sp, text):
    assert ours.encode(text, add_bos=False, special=False) == sp.encode(text)
    assert ours.encode(text) == [sp.bos_id(), *sp.encode(text)]
    assert ours.decode(sp.encode(text)) == sp.decode(sp.encode(text))


def test_spm_byte_fallback_is_exercised(ours, sp):
    ids = ours.encode("ꙮ🦀", add_bos=False)
    assert all(sp.is_byte(i) for i in ids if sp.id_to_piece(i) != "▁") and len(ids) >= 7
    assert b"".join(ours.token_to_bytes(i) for i in ids) == " ꙮ🦀".encode()


@pytest.mark.parametrize("text", SPECIAL_TEXTS)
def test_spm_special_tokens(ours, sp, text):
    """Control tokens in the text are matched whole; each text piece between them is tokenized by
    SentencePiece with its own dummy prefix (llama.cpp's and the legacy Llama tokenizer's rule)."""
    specials = {"<s>": 1, "</s>": 2, "<pad>": SPM_VOCAB, "<unk>": 0}
    expected = []
    for piece in re.split("(<s>|</s>|<pad>|<unk>)", text):
        if piece in specials:
            expected.append(specials[piece])
        elif piece:
            expected += sp.encode(piece)
    assert ours.encode(text, add_bos=False) == expected
    assert ours.encode(text, add_bos=False, special=False) == sp.encode(text)


def test_spm_through_the_engine(tmp_path):
    """A converted 1bitLLM file: the engine accepts the scores array and Model tokenizes like SentencePiece."""
    from bitnet import Model
    from tests.conftest import convert_checkpoint
    from tests.hf_families import make_1bitllm_checkpoint

    ckpt = make_1bitllm_checkpoint(tmp_path / "m", num_hidden_layers=1)
    processor = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    with Model(convert_checkpoint(ckpt), n_threads=1) as m:
        for text in SPM_TEXTS[:10]:
            assert m.tokenize(text) == [1, *processor.encode(text)]
        assert m.tokenizer.eos_id == 2 and m.tokenizer.is_eog(2)


def test_spm_refusals(spm_dir, tmp_path):
    meta = meta_of(spm_dir, kind="spm")
    with pytest.raises(BitnetError, match="scores is missing"):
        Tokenizer.from_gguf_metadata({k: v for k, v in meta.items() if k != "tokenizer.ggml.scores"})
    with pytest.raises(BitnetError, match="remove_extra_whitespaces is not supported"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.remove_extra_whitespaces": True})
    with pytest.raises(BitnetError, match="tokenizer model 't5' is not supported"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.model": "t5"})
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x05junk")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        gguf_tokenizer_fields(tmp_path, kind="spm")
    unigram = tmp_path / "u"
    unigram.mkdir()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world foo bar baz", "the quick brown fox"] * 20),
                                   model_prefix=str(unigram / "tokenizer"), vocab_size=25, model_type="unigram",
                                   minloglevel=2)  # fmt: skip
    with pytest.raises(ValueError, match="model type 1 is not supported"):
        gguf_tokenizer_fields(unigram, kind="spm")


# -- byte-level BPE under the names Falcon3 / Falcon-E files carry -------------------------------------------
@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    write_test_tokenizer(d)
    return d


@pytest.mark.parametrize("pre", ["llama-bpe", "falcon3", "falcon_e", "llama3"])
def test_bpe_pre_tokenizer_names(bpe_dir, pre):
    hf = HFTokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    tok = Tokenizer.from_gguf_metadata({**meta_of(bpe_dir), "tokenizer.ggml.pre": pre})
    for text in TEXTS:
        assert tok.encode(text) == hf.encode(text).ids


def test_bpe_without_ignore_merges_says_so(bpe_dir, tmp_path):
    """llama.cpp assumes Llama-3's ignore_merges for these names; a tokenizer.json without it gets
    an explicit key, and our tokenizer follows it."""
    data = json.loads((bpe_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["ignore_merges"] = False
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_bytes((bpe_dir / "tokenizer_config.json").read_bytes())
    meta = meta_of(tmp_path)
    assert meta["tokenizer.ggml.ignore_merges"] is False
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.from_gguf_metadata(meta)
    for text in TEXTS:
        assert tok.encode(text) == hf.encode(text).ids


# -- chat templates of the families -----------------------------------------------------------------------
LLAMA3_INSTRUCT = (  # Meta-Llama-3-8B-Instruct's, which HF1BitLLM/Llama3-8B-1.58-100B-tokens ships
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
FALCON3_INSTRUCT = """\
{%- if tools %}
{{- '<|system|>\\n' + (messages[0]['content'] if messages[0]['role'] == 'system' else '') }}
{{- 'You have access to these tools: ' + tools | tojson(indent=2) + '\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message['role'] == 'system' and not tools %}
{{- '<|system|>\\n' + message['content'] + '\\n' }}
{%- elif message['role'] == 'user' %}
{{- '<|user|>\\n' + message['content'] + '\\n' }}
{%- elif message['role'] == 'assistant' %}
{%- if not loop.last %}
{{- '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}
{%- else %}
{{- '<|assistant|>\\n' + message['content'] + eos_token }}
{%- endif %}
{%- endif %}
{%- if loop.last and add_generation_prompt %}
{{- '<|assistant|>\\n' }}
{%- endif %}
{%- endfor %}"""  # the shape of tiiuae/Falcon3-*-Instruct(-1.58bit)'s and Falcon-E-*-Instruct's
CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": " You are terse.\n"}, {"role": "user", "content": "2+2?"}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Café 😀\n\nok"}],
]  # fmt: skip


@pytest.fixture(scope="module")
def auto(bpe_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(bpe_dir))


@pytest.mark.parametrize("template", [LLAMA3_INSTRUCT, FALCON3_INSTRUCT], ids=["llama3", "falcon3"])
@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("gen", [True, False])
def test_family_chat_templates_equal_transformers(auto, template, chat, gen):
    expected = auto.apply_chat_template(chat, chat_template=template, tokenize=False, add_generation_prompt=gen)
    ours = render_chat(chat, template, bos_token=auto.bos_token, eos_token=auto.eos_token, add_generation_prompt=gen)
    assert ours == expected


def test_template_travels_into_the_gguf(bpe_dir, tmp_path):
    config = json.loads((bpe_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": FALCON3_INSTRUCT}))
    assert meta_of(tmp_path)["tokenizer.chat_template"] == FALCON3_INSTRUCT
