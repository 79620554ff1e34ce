"""bitnet: exact, fast inference for ternary (1.58-bit) LLMs on the CPU.

    from bitnet import Model
    m = Model("model.gguf", n_threads=2)
    print(m.generate("Once upon a time", max_tokens=32))
"""

from bitnet.errors import BitnetError

__version__ = "0.1.0"
__all__ = ["BitnetError", "Model", "__version__"]


def __getattr__(name):
    # Model pulls in the native library; import it lazily so that `bitnet.convert` and the
    # tokenizer work (and report errors well) even before the engine is built.
    if name == "Model":
        from bitnet.model import Model

        return Model
    raise AttributeError(f"module 'bitnet' has no attribute {name!r}")
