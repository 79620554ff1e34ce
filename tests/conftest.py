"""Shared fixtures: small random BitNet checkpoints and their GGUF conversions, built once per
test session (offline: transformers builds the models from a config)."""

import os
import sys
from pathlib import Path

import pytest

# transformers' BitNet unpack_weights is torch.compile'd; compiling costs more than it saves here.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
# The GPU backend's tests run in Triton's interpreter on CPU tensors unless TRITON_INTERPRET=0 is
# set (gpu/device_check.sh, on a GPU). Set before any test module imports triton: triton reads it
# once, so a later setdefault in tests/test_gpu_*.py would come too late in a whole-suite run.
os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def convert_checkpoint(model_dir: Path, outtype: str = "i2_s", outfile: Path | None = None) -> Path:
    from bitnet.convert.hf_bitnet import convert

    outfile = outfile or model_dir / f"ggml-model-{outtype}.gguf"
    return Path(convert(model_dir, outfile, outtype=outtype, progress=False))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A packed (uint8 + weight_scale, autobitlinear) checkpoint in the 2B-4T hub layout."""
    from tests.hf_models import make_bitnet_checkpoint

    return make_bitnet_checkpoint(tmp_path_factory.mktemp("tiny-packed"), layout="packed", seed=0)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_checkpoint) -> Path:
    """The I2_S GGUF of tiny_checkpoint."""
    return convert_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf):
    from bitnet import Model

    m = Model(tiny_gguf, n_threads=2, n_ctx=256)
    yield m
    m.close()
