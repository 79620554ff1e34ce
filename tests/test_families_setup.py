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


def test_every_bitnet_cpp_repository_is_known_and_every_language_model_supported():
    assert len(BITNET_CPP_REPOS) == 17 and set(BITNET_CPP_REPOS) <= set(setup_env.HF_MODELS)
    for repo in BITNET_CPP_REPOS:
        supported = setup_env.FAMILIES[setup_env.HF_MODELS[repo].family] is None
        assert supported == ("embedding" not in repo), repo


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
