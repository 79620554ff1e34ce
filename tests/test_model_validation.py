"""The loader's architecture table and its checks of hyper-parameters against tensors."""

import numpy as np
import pytest

from bitnet import BitnetError, Model
from bitnet.convert.gguf_reader import read_gguf
from tests.gguf_edit import rewrite_gguf

ARCH = "bitnet-b1.58"


def logits_of(path, ids):
    with Model(path, n_threads=1) as m:
        return m.logits(ids)


@pytest.mark.parametrize("alias", ["bitnet-25", "bitnet"])
def test_architecture_aliases_run_the_same_model(tiny_gguf, tmp_path, alias):
    """bitnet.cpp's older name, and upstream llama.cpp's `bitnet` with a GPT-2 vocabulary (the
    2B-4T layout), mean relu2 and theta 500000 even without explicit keys."""
    out = rewrite_gguf(tiny_gguf, tmp_path / f"{alias}.gguf", rename_prefix=(ARCH, alias),
                       set_kv={"general.architecture": (alias, "string")},
                       drop_kv=(f"{alias}.hidden_act", f"{alias}.rope.freq_base"))
    ids = [1, 5, 9, 14, 3, 200, 7]
    np.testing.assert_array_equal(logits_of(out, ids), logits_of(tiny_gguf, ids))


def test_upstream_bitnet_with_sentencepiece_vocab_means_silu(tiny_gguf, tmp_path):
    """Without a GPT-2 vocabulary, `bitnet` is 1bitLLM's model: SiLU. The file then fails for
    its tokenizer (SentencePiece is not supported yet), but the engine resolved the row."""
    out = rewrite_gguf(tiny_gguf, tmp_path / "b.gguf", rename_prefix=(ARCH, "bitnet"),
                       set_kv={"general.architecture": ("bitnet", "string"),
                               "tokenizer.ggml.model": ("llama", "string")},
                       drop_kv=("bitnet.hidden_act",))
    from bitnet.engine import NativeModel

    assert "silu" in NativeModel(out).desc


def test_explicit_hidden_act_wins(tiny_gguf, tmp_path):
    out = rewrite_gguf(tiny_gguf, tmp_path / "silu.gguf", set_kv={f"{ARCH}.hidden_act": ("silu", "string")})
    ids = [4, 8, 15, 16, 23, 42]
    assert not np.array_equal(logits_of(out, ids), logits_of(tiny_gguf, ids))


BAD_FILES = [
    ("unknown architecture", dict(set_kv={"general.architecture": ("gpt-neox", "string")}),
     r"unknown architecture 'gpt-neox' \(supported: bitnet-b1\.58"),
    ("width contradicts tensors", dict(set_kv={f"{ARCH}.embedding_length": (256, "u32")},
                                       drop_kv=(f"{ARCH}.rope.dimension_count",)),
     r"tensor '.*' has shape .* expected .*disagree"),
    ("more layers than tensors", dict(set_kv={f"{ARCH}.block_count": (3, "u32")}), r"missing tensor 'blk\.2\."),
    ("heads do not divide the width", dict(set_kv={f"{ARCH}.attention.head_count": (3, "u32")}),
     r"not divisible by head_count"),
    ("kv heads do not divide heads", dict(set_kv={f"{ARCH}.attention.head_count_kv": (3, "u32")}),
     r"not divisible by head_count_kv"),
    ("absurd layer count", dict(set_kv={f"{ARCH}.block_count": (1 << 30, "u32")}), r"out of range"),
    ("vocab_size disagrees", dict(set_kv={f"{ARCH}.vocab_size": (7, "u32")}), r"vocab_size 7 disagrees"),
    ("wrong key type", dict(set_kv={f"{ARCH}.block_count": ("two", "string")}), r"block_count"),
    ("unknown activation", dict(set_kv={f"{ARCH}.hidden_act": ("gelu", "string")}), r"unsupported hidden_act 'gelu'"),
    ("architecture with a newline", dict(set_kv={"general.architecture": ("evil\nname", "string")}),
     r"unknown architecture 'evil\\x0aname'"),
    ("activation with a newline", dict(set_kv={f"{ARCH}.hidden_act": ("gelu\r\nx", "string")}),
     r"unsupported hidden_act 'gelu\\x0d\\x0ax'"),
    ("missing tensor", dict(drop_tensors=("blk.1.ffn_up.weight",)), r"missing tensor 'blk\.1\.ffn_up\.weight'"),
]


@pytest.mark.parametrize("case,edit,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_inconsistent_files_are_refused_with_a_clear_message(tiny_gguf, tmp_path, case, edit, message):
    out = rewrite_gguf(tiny_gguf, tmp_path / "bad.gguf", **edit)
    with pytest.raises(BitnetError, match=message) as err:
        Model(out)
    assert "\n" not in str(err.value)


def test_unused_i2s_code_is_refused(tiny_gguf, tmp_path):
    """Code 3 never occurs in a canonical I2_S tensor; a file holding it is misread otherwise."""
    name = "blk.0.attn_q.weight"
    data = bytearray(read_gguf(tiny_gguf).tensors[name].data)
    data[5] = 0xFF
    out = rewrite_gguf(tiny_gguf, tmp_path / "code3.gguf", tensor_bytes={name: bytes(data)})
    with pytest.raises(BitnetError, match="unused 2-bit code 3"):
        Model(out)


def test_nan_in_a_norm_is_refused(tiny_gguf, tmp_path):
    name = "blk.0.attn_norm.weight"
    t = read_gguf(tiny_gguf).tensors[name]
    values = np.frombuffer(bytes(t.data), dtype=np.float32).copy()
    values[3] = np.nan
    out = rewrite_gguf(tiny_gguf, tmp_path / "nan.gguf", tensor_bytes={name: values.tobytes()})
    with pytest.raises(BitnetError, match="NaN or Inf"):
        Model(out)
