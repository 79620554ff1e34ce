"""Which torch device the GPU backend runs on: CUDA, or, under Triton's interpreter
(TRITON_INTERPRET=1), the CPU, so that the whole GPU code path can be checked without a GPU."""

from __future__ import annotations

import os

from bitnet.errors import BitnetError


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def require_packages() -> None:
    """BitnetError saying what to install when torch or triton is missing."""
    missing = []
    for name in ("torch", "triton"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise BitnetError(f"the GPU backend needs {' and '.join(missing)}: pip install -e \".[gpu]\" "
                          "(torch with CUDA, triton)")


def resolve_device(device=None):
    """A torch.device for `device` ("cuda", "cuda:N", or None = "cuda")."""
    require_packages()
    import torch

    name = str(device) if device is not None else "cuda"
    if not name.startswith("cuda"):
        raise BitnetError(f"the GPU backend runs on a CUDA device, not {name!r}")
    if interpreting():
        return torch.device("cpu")  # Triton's interpreter runs the kernels on CPU tensors
    if not torch.cuda.is_available():
        raise BitnetError("no CUDA device is available (torch.cuda.is_available() is False); use device='cpu', "
                          "or set TRITON_INTERPRET=1 to run the GPU code path on the CPU (slow, for checking)")
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 matmuls (attention) stay f32
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise BitnetError(f"no CUDA device {name!r} ({torch.cuda.device_count()} available)")
    return dev
