"""setup_env.py -hr / -md for every family: bitnet.cpp's 17 repositories are known, every
language model among them converts, and without a network -hr says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.cli import setup_env
from tests.hf_families import make_1bitllm_checkpoint, make_llama_bitnet_checkpoint

REPO = Path(__file__).resolve().parent.parent
# bitnet.cpp's setup_env.py SUPPORTED_HF_MODELS, in its order.
BITNET_CPP_REPOS = [
    "1bitLLM/bitnet_b1_58-large", "1bitLLM/bitnet_b1_58-3B", "HF1BitLLM/Llama3-8B-1.58-100B-tokens",
    "tiiuae/Falcon3-7B-Instruct-1.58bit", "tiiuae/Falcon3-7B-1.58bit", "tiiuae/Falcon3-10B-Instruct-1.58bit",
    "tiiuae/Falcon3-10B-1.58bit", "tiiuae/Falcon3-3B-Instruct-1.58bit", "tiiuae/Falcon3-3B-1.58bit",
    "tiiuae/Falcon3-1B-Instruct-1.58bit", "microsoft/BitNet-b1.58-2B-4T", "tiiuae/Falcon-E-3B-Instruct",
    "tiiuae/Falcon-E-1B-Instruct", "tiiuae/Falcon-E-3B-Base", "tiiuae/Falcon-E-1B-Base",
    "microsoft/bitnet-embedding-0.6b", "microsoft/bitnet-embedding-270m",
]  # fmt: skip


def run_setup(*args, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "setup_env.py"), "--skip-build", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=300)  # fmt: skip


def test_every_bitnet_cpp_repository_is_known_and_supported():
    assert len(BITNET_CPP_REPOS) == 17 and set(BITNET_CPP_REPOS) <= set(setup_env.HF_MODELS)
    for repo in BITNET_CPP_REPOS:
        assert setup_env.FAMILIES[setup_env.HF_MODELS[repo].family] is None, repo


@pytest.mark.parametrize("repo", ["tiiuae/Falcon3-1B-Instruct-1.58bit", "1bitLLM/bitnet_b1_58-large"])
def test_hr_without_network_is_one_line_pointing_to_model_dir(tmp_path, repo):
    proc = run_setup("-hr", repo, "-md", tmp_path, env={"HF_HUB_OFFLINE": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "cannot download" in lines[0] and "--model-dir" in lines[0]


@pytest.mark.parametrize("make", [make_llama_bitnet_checkpoint, make_1bitllm_checkpoint], ids=["llama", "1bitllm"])
def test_md_converts_each_family(tmp_path, make):
    model_dir = make(tmp_path / "ckpt", num_hidden_layers=1)
    proc = run_setup("-md", model_dir)
    assert proc.returncode == 0, proc.stderr
    out = model_dir / "ggml-model-i2_s.gguf"
    from bitnet import Model

    with Model(out, n_threads=1) as m:
        assert m.generate("Once upon", max_tokens=3, temperature=0.0) is not None


def test_quant_embd_is_bare_for_f16_or_takes_a_type():
    parse = setup_env.build_parser().parse_args
    assert parse([]).quant_embd is None
    for argv in (["--quant-embd"], ["--quant-embd", "-md", "x"], ["-md", "x", "--quant-embd"]):
        assert parse(argv).quant_embd == "f16", argv
    for embedding_type in ("f16", "q8_0", "q6_k"):
        assert parse(["--quant-embd", embedding_type, "-md", "x"]).quant_embd == embedding_type
        assert parse([f"--quant-embd={embedding_type}"]).quant_embd == embedding_type
    proc = run_setup("--quant-embd", "q4_0")
    assert proc.returncode == 2 and proc.stderr.startswith("error: argument --quant-embd: invalid choice"), proc.stderr


def test_md_quant_embd_sets_the_embedding_type(tmp_path):
    """Without the flag the embedding stays as stored (BF16); bare it is F16 (bitnet.cpp's meaning);
    q8_0 / q6_k quantize it. The untied output head stays as stored every time."""
    from bitnet import Model
    from bitnet.convert.gguf_reader import read_gguf

    model_dir = make_llama_bitnet_checkpoint(tmp_path / "ckpt", num_hidden_layers=1)
    out = model_dir / "ggml-model-i2_s.gguf"
    for flags, ggml_type in (((), 30), (("--quant-embd",), 1), (("--quant-embd", "q8_0"), 8),
                             (("--quant-embd", "q6_k"), 14)):  # fmt: skip
        out.unlink(missing_ok=True)
        proc = run_setup("-md", model_dir, *flags)
        assert proc.returncode == 0, proc.stderr
        g = read_gguf(out)
        assert g.tensors["token_embd.weight"].ggml_type == ggml_type, flags
        assert g.tensors["output.weight"].ggml_type == 30, flags
    with Model(out, n_threads=1) as m:
        assert "embedding Q6_K + output head BF16" in m.native.desc
        assert m.generate("Once upon", max_tokens=3, temperature=0.0) is not None
