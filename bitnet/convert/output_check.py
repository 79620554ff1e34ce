"""The last check of every converter: the file it wrote loads with our own loader and tokenizer.

GGUFWriter calls `check_loads(temporary path)` before renaming the file into place, so a
converter can never put down a file that run_inference.py would then refuse (a vocabulary the
tokenizer cannot build, a hyper-parameter the engine's limits reject, a template that does not
compile is only warned about, as at load)."""

from __future__ import annotations

from pathlib import Path


def check_loads(path: Path) -> None:
    """ValueError (one line) if the engine or the tokenizer refuses the GGUF file at path."""
    from bitnet.engine import NativeModel
    from bitnet.errors import BitnetError
    from bitnet.tokenizer import Tokenizer

    try:
        model = NativeModel(path)
        try:
            Tokenizer.from_gguf_metadata(model.metadata())
        finally:
            model.close()
    except (BitnetError, ValueError) as e:
        reason = " ".join(str(e).replace(str(path), "the file").split())
        raise ValueError(f"the converted file would not load ({reason}); nothing was written") from None
