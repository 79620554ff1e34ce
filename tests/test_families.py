"""Every ternary family, converted from its hub layout and run by the engine, against a float32
reference of that family: transformers' LlamaForCausalLM with the bitnet quantizer for Llama3 /
Falcon3 / Falcon-E, the published equations for 1bitLLM (DESIGN §3's rule for logits and greedy).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitnet import BitnetError, Model
from bitnet.convert.gguf_reader import read_gguf
from bitnet.convert.hf_bitnet import convert
from bitnet.convert.i2s import unpack_i2s
from bitnet.convert.safetensors_reader import Checkpoint
from bitnet.convert.ternary import unpack_hf_packed
from tests.conftest import convert_checkpoint
from tests.gguf_edit import rewrite_gguf
from tests.hf_families import make_1bitllm_checkpoint, make_llama_bitnet_checkpoint
from tests.hf_models import reference_logits

LOGIT_TOLERANCE = 1e-2  # DESIGN §3: max |diff| <= this * max |reference logit|
NEAR_TIE = 0.02  # greedy may part where the reference's top two are this close
GREEDY_STEPS = 24

FAMILIES = {
    # HF1BitLLM/Llama3-8B-1.58, tiiuae/Falcon3-*-1.58bit: bitlinear (divide), untied bf16 head
    "llama3-falcon3": lambda d: make_llama_bitnet_checkpoint(d, linear_class="bitlinear", seed=1),
    # tiiuae/Falcon-E: autobitlinear offline (multiply), tied embedding
    "falcon-e": lambda d: make_llama_bitnet_checkpoint(d, linear_class="autobitlinear", tied=True, seed=2),
    # quantization_config.use_rms_norm: an RMSNorm inside every BitLinear
    "falcon-e-use-rms-norm": lambda d: make_llama_bitnet_checkpoint(d, linear_class="autobitlinear",
                                                                    use_rms_norm=True, seed=3),  # fmt: skip
    # head_dim in config.json, not hidden / heads (written as attention.key_length)
    "llama-head-dim": lambda d: make_llama_bitnet_checkpoint(d, num_attention_heads=4, num_key_value_heads=2,
                                                             head_dim=32, seed=4),  # fmt: skip
    # 1bitLLM/bitnet_b1_58-*: fp16 masters, sub-norms, SentencePiece
    "1bitllm": lambda d: make_1bitllm_checkpoint(d, seed=5),
    # bitnet_b1_58-3B's FFN of 8640 (67.5 I2_S blocks) under a hidden size of 320 (5 heads of 64); its
    # logits are judged against float64 (test_odd_widths_follow_the_float64_reference)
    "1bitllm-odd-widths": lambda d: make_1bitllm_checkpoint(d, hidden_size=320, intermediate_size=8640,
                                                            num_attention_heads=5, seed=6),  # fmt: skip
}
ONSET = 1e-4  # DESIGN section 3: a position whose logits part from float64 by more (x max |logit|)
FLOAT_EXACT = 1e-5


def prompt_ids(n_vocab: int, n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, n_vocab, size=n).tolist()


def assert_logits_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    worst, bound = np.abs(ours - ref).max(), LOGIT_TOLERANCE * np.abs(ref).max()
    assert worst <= bound, f"max |logit diff| {worst:.4g} > {bound:.4g}"


def assert_greedy_matches(model_dir, gguf, prompt_seed: int = 7) -> None:
    """Our greedy continuation, teacher-forced through the reference: each step is its argmax or
    a near tie of it."""
    with Model(gguf, n_threads=2) as m:
        prompt = prompt_ids(m.n_vocab, 8, prompt_seed)
        ours = list(m.generate_tokens(prompt, max_tokens=GREEDY_STEPS, temperature=0.0))
    assert len(ours) >= 6 and len(set(ours)) >= 3, f"degenerate greedy output {ours}"
    steps = reference_logits(model_dir, prompt + ours)[len(prompt) - 1 :]
    for s, token in enumerate(ours):
        row = steps[s]
        if int(np.argmax(row)) != token:
            top2 = np.sort(row)[-2:]
            assert top2[1] - top2[0] <= NEAR_TIE * np.abs(row).max(), f"step {s}: ours {token}, ref {np.argmax(row)}"


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    model_dir = FAMILIES[request.param](tmp_path_factory.mktemp(request.param))
    return request.param, model_dir, convert_checkpoint(model_dir)


def test_logits_match_the_reference(family):
    name, model_dir, gguf = family
    if name == "1bitllm-odd-widths":
        pytest.skip("judged against float64: test_odd_widths_follow_the_float64_reference")
    with Model(gguf, n_threads=2) as m:
        ids = prompt_ids(m.n_vocab, 24, seed=1)
        assert_logits_close(m.logits(ids), reference_logits(model_dir, ids))


def test_greedy_tokens_match_the_reference(family):
    _, model_dir, gguf = family
    assert_greedy_matches(model_dir, gguf)


def test_gguf_says_what_the_family_is(family):
    name, model_dir, gguf = family
    g = read_gguf(gguf)
    arch = "bitnet" if name.startswith("1bitllm") else "llama"
    assert g.kv["general.architecture"] == arch and g.kv[f"{arch}.hidden_act"] == "silu"
    assert g.kv["tokenizer.ggml.model"] == ("llama" if name.startswith("1bitllm") else "gpt2")
    has_sub_norms = any(n.endswith("sub_norm.weight") for n in g.tensors)
    assert has_sub_norms == name.startswith("1bitllm")
    assert ("output.weight" in g.tensors) == (name != "falcon-e")
    assert any(n.endswith("input_norm.weight") for n in g.tensors) == (name == "falcon-e-use-rms-norm")


def test_llama_q_k_rows_are_in_llama_cpp_rope_order(tmp_path):
    """llama.cpp's `llama` runs "normal" RoPE on rows its converter permuted: rows d and hd/2 + d of
    each head become rows 2d and 2d + 1. We write the same order (so llama.cpp reads our files)."""
    model_dir = make_llama_bitnet_checkpoint(tmp_path / "m", num_hidden_layers=1)
    config = json.loads((model_dir / "config.json").read_text())
    hf = Checkpoint(model_dir)
    g = read_gguf(convert(model_dir, tmp_path / "m.gguf", progress=False))
    hd = config["head_dim"]
    for name, heads in (("q_proj", config["num_attention_heads"]), ("k_proj", config["num_key_value_heads"])):
        codes = unpack_hf_packed(hf.raw(f"model.layers.0.self_attn.{name}.weight"))
        stored, _ = unpack_i2s(g.tensors[f"blk.0.attn_{name[0]}.weight"].data, codes.shape[0], codes.shape[1])
        for h in range(heads):
            for d in range(hd // 2):
                assert (stored[h * hd + 2 * d] == codes[h * hd + d]).all()
                assert (stored[h * hd + 2 * d + 1] == codes[h * hd + hd // 2 + d]).all()


def test_float_llama_checkpoint_is_refused(tmp_path):
    model_dir = make_llama_bitnet_checkpoint(tmp_path / "m", num_hidden_layers=1)
    config = json.loads((model_dir / "config.json").read_text())
    del config["quantization_config"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="without a bitnet quantization_config holds float weights"):
        convert(model_dir, tmp_path / "out.gguf", progress=False)


def test_unknown_checkpoint_lists_the_supported_families(tmp_path):
    model_dir = make_llama_bitnet_checkpoint(tmp_path / "m", num_hidden_layers=1)
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = ["MistralForCausalLM"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="MistralForCausalLM.*supports BitNetForCausalLM.*BitnetForCausalLM.*Llama"):
        convert(model_dir, tmp_path / "out.gguf", progress=False)


def test_a_file_whose_tensors_do_not_fit_its_architecture_is_refused(tiny_gguf, tmp_path):
    """A 2B-4T file (sub-norms) labelled `llama`: the sub-norm tensors are not part of that row."""
    out = rewrite_gguf(tiny_gguf, tmp_path / "llama.gguf", rename_prefix=("bitnet-b1.58", "llama"),
                       set_kv={"general.architecture": ("llama", "string")})  # fmt: skip
    with pytest.raises(BitnetError, match=r"tensor 'blk\.0\.attn_sub_norm\.weight' is not part of the 'llama'"):
        Model(out)


def onsets(logits: np.ndarray, exact: np.ndarray) -> list[int]:
    """Positions where the logits leave float error of `exact` after a position within it."""
    scale = np.abs(exact).max()
    off = np.abs(logits - exact).max(axis=1) > ONSET * scale
    return [i for i in range(len(off)) if off[i] and (i == 0 or not off[i - 1])]


def test_odd_widths_follow_the_float64_reference(tmp_path):
    """DESIGN section 3 on 1bitLLM-3B's widths (FFN 8640, hidden 320): float-exact against a float64
    run of the reference until the first onset (a value within float error of an int8 rounding
    boundary; the KV cache may carry it on), and no more onsets than the float32 reference has."""
    import torch

    from tests import onebitllm_reference as onebit

    model_dir = FAMILIES["1bitllm-odd-widths"](tmp_path / "m")
    gguf = convert_checkpoint(model_dir)
    ref32 = onebit.load_1bitllm(model_dir)
    ref64 = onebit.ReferenceModel(ref32.embed.double(), ref32.head.double(), ref32.norm.double(), n_head=ref32.n_head,
                                  n_head_kv=ref32.n_head_kv, rope_theta=ref32.rope_theta, eps=ref32.eps,
                                  act=ref32.act)  # fmt: skip
    ref64.layers = [{k: v.to(torch.float64) for k, v in layer.items()} for layer in ref32.layers]
    with Model(gguf, n_threads=2) as m:
        ids = prompt_ids(m.n_vocab, 24, seed=1)
        ours = m.logits(ids)
    exact = onebit.reference_logits(ref64, ids)
    ours_onsets, ref_onsets = onsets(ours, exact), onsets(onebit.reference_logits(ref32, ids), exact)
    first = ours_onsets[0] if ours_onsets else len(ids)
    worst = np.abs(ours[:first] - exact[:first]).max() / np.abs(exact).max()
    assert worst <= FLOAT_EXACT, f"not float-exact before the first onset ({first}): {worst:.3g}"
    assert len(ours_onsets) <= len(ref_onsets) + 1, f"onsets at {ours_onsets}, float32 reference {ref_onsets}"
