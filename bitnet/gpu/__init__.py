"""The GPU backend: the same GGUF files on one CUDA device, in PyTorch with Triton kernels
(ternary weights stay 2-bit; activations int8 exactly as the CPU engine). With TRITON_INTERPRET=1
everything runs on CPU tensors through Triton's interpreter, which is how it is tested without a GPU.

    from bitnet import Model
    m = Model("model.gguf", device="cuda")
"""

from bitnet.gpu.device import interpreting, require_packages, resolve_device

__all__ = ["GpuContext", "GpuModel", "interpreting", "require_packages", "resolve_device"]


def __getattr__(name):
    # torch and triton load only when the backend is used.
    if name in ("GpuModel", "GpuContext"):
        from bitnet.gpu import forward

        return getattr(forward, name)
    raise AttributeError(f"module 'bitnet.gpu' has no attribute {name!r}")
