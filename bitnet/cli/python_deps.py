"""The package's runtime Python dependencies, installed by setup_env.py when missing (bitnet.cpp's
users run that script on a fresh machine, where numpy, tokenizers and jinja2 may be absent).

The list comes from pyproject.toml's [project] dependencies, so it is written in one place.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

# Distribution name -> the module it provides, where they differ.
MODULE_OF = {"jinja2": "jinja2", "tokenizers": "tokenizers", "numpy": "numpy", "tqdm": "tqdm"}


# Optional module -> the extra (pyproject.toml) that installs it, for "missing package" errors.
EXTRA_OF = {"fastapi": "server", "uvicorn": "server", "pydantic": "server", "starlette": "server",
            "prometheus_client": "server", "huggingface_hub": "hub", "torch": "test", "transformers": "test",
            "safetensors": "test", "accelerate": "test", "gguf": "test", "sentencepiece": "test"}


def install_hint(module: str | None) -> str:
    """What to run when `module` cannot be imported: the extra that carries it, else a reinstall."""
    top = (module or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is not None:
        return f'pip install "bitnet[{extra}]" (from a checkout: pip install -e ".[{extra}]")'
    if top in MODULE_OF.values():
        return "pip install bitnet (from a checkout: `python setup_env.py`, which installs what is missing)"
    return f"pip install {top}" if top else "pip install bitnet"


def runtime_requirements(pyproject: Path) -> list[str]:
    """The requirement strings of [project] dependencies (e.g. "numpy>=1.24")."""
    text = pyproject.read_text(encoding="utf-8")
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    if block is None:
        raise ValueError(f"{pyproject}: no [project] dependencies list")
    return re.findall(r'"([^"]+)"', block.group(1))


def missing(requirements: list[str]) -> list[str]:
    """The requirements whose module cannot be imported."""
    out = []
    for req in requirements:
        name = re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower()
        if importlib.util.find_spec(MODULE_OF.get(name, name.replace("-", "_"))) is None:
            out.append(req)
    return out


def install(requirements: list[str], log_path: Path) -> int:
    """pip install requirements into this interpreter, output to log_path; returns pip's status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run([sys.executable, "-m", "pip", "install", *requirements], stdout=log,
                              stderr=subprocess.STDOUT).returncode
