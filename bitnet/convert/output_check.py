"""The last check of every converter: the file it wrote loads with our own loader and tokenizer.

GGUFWriter calls `check_loads(temporary path)` before renaming the file into place, so a
converter can never put down a file that run_inference.py would then refuse (a vocabulary the
tokenizer cannot build, a hyper-parameter the engine's limits reject). The load runs in a child
process: the converter's own memory stays as small as its streaming write keeps it (a load maps
and repacks the whole model), and even a crash of the loader only refuses the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
LOAD_TIMEOUT_S = 600


def check_loads(path: Path) -> None:
    """ValueError (one line) if the engine or the tokenizer refuses the GGUF file at path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, "-m", "bitnet.convert.output_check", str(path)], env=env,
                              capture_output=True, text=True, timeout=LOAD_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ValueError(f"the converted file did not load within {LOAD_TIMEOUT_S} s; nothing was written") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        reason = lines[-1] if lines and proc.returncode == 1 else f"the loader died (exit status {proc.returncode})"
        reason = " ".join(reason.replace(str(path), "the file").split())[:300]
        raise ValueError(f"the converted file would not load ({reason}); nothing was written")


def _load(path: str) -> int:
    from bitnet.engine import NativeModel
    from bitnet.errors import BitnetError
    from bitnet.tokenizer import Tokenizer

    try:
        model = NativeModel(path)
        try:
            Tokenizer.from_gguf_metadata(model.metadata())
        finally:
            model.close()
    except (BitnetError, ValueError, OSError) as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_load(sys.argv[1]))
