"""Where the package finds its files: the engine library, bitnet-bench, the kernel presets and the
demo model. An installed wheel carries them all inside the package folder (CMake's install
rules put them there); a source checkout has them in build/ (what CMake built) and in the
checkout's preset_kernels/ and models/. The package folder is looked at first, then the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The source checkout this package sits in, if any (None for an installed wheel).
CHECKOUT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "CMakeLists.txt").is_file() else None
DEMO_MODEL_RELPATH = Path("models/bitnet-b1.58-austen-5M/ggml-model-i2_s.gguf")
PRESET_FOLDER = "preset_kernels"


def newest_build_output(relpath: str) -> list[Path]:
    """The checkout's build/<any>/<relpath> files, newest first (every CMake build folder writes
    its library to <build>/lib and its programs to <build>/bin; the newest is the one just built).
    Build folders this Python must not run from are left out (_foreign_build)."""
    if CHECKOUT is None:
        return []
    found = [p for p in (CHECKOUT / "build").glob(f"*/{relpath}") if p.is_file()]
    found = [p for p in found if not _foreign_build(p.parents[len(Path(relpath).parts) - 1])]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


# CMake cache entries of builds whose outputs need a preloaded runtime (sanitizers, libFuzzer)
# or are another machine's code (a toolchain file): CMake now writes their library to lib-*/,
# and these catch folders configured before it did.
_FOREIGN_CACHE_ENTRIES = ("BITNET_SANITIZE:BOOL=ON", "BITNET_FUZZ:BOOL=ON", "CMAKE_TOOLCHAIN_FILE:")


def _foreign_build(build_dir: Path) -> bool:
    try:
        cache = (build_dir / "CMakeCache.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(entry in cache for entry in _FOREIGN_CACHE_ENTRIES)


def library_candidates(name: str, search_path: list[str]) -> list[Path]:
    """Where libbitnet may be, in the order tried: $BITNET_LIB; from a checkout, the newest
    build/*/lib (a file left in the package folder by builds before issue 16 comes after it);
    the package folder (a wheel); bitnet/ on sys.path (an editable install's site-packages)."""
    paths = []
    if os.environ.get("BITNET_LIB"):
        paths.append(Path(os.environ["BITNET_LIB"]))
    paths += newest_build_output(f"lib/{name}")
    paths.append(PACKAGE_DIR / name)
    paths += [Path(p) / "bitnet" / name for p in search_path if p]
    return paths


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/bitnet (~/.cache/bitnet by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bitnet"


def tuned_preset_dir() -> Path:
    """Where an autotune writes its preset: $BITNET_PRESET_DIR, else the per-user cache (never the
    shipped presets, which stay read-only)."""
    env = os.environ.get("BITNET_PRESET_DIR")
    return Path(env) if env else user_cache_dir() / "presets"


def shipped_preset_dir() -> Path:
    """The presets that ship: inside the package (a wheel), else the checkout's preset_kernels/."""
    inside = PACKAGE_DIR / PRESET_FOLDER
    if inside.is_dir() or CHECKOUT is None:
        return inside
    return CHECKOUT / PRESET_FOLDER


def preset_search_dirs() -> list[Path]:
    """Folders searched for this CPU's preset, first match wins: $BITNET_PRESET_DIR alone when set;
    else this user's tuned presets, then the shipped ones."""
    if os.environ.get("BITNET_PRESET_DIR"):
        return [tuned_preset_dir()]
    return [tuned_preset_dir(), shipped_preset_dir()]


def demo_model() -> Path:
    """The demo model's GGUF: inside the package (a wheel), else in the checkout's models/."""
    inside = PACKAGE_DIR / DEMO_MODEL_RELPATH
    if inside.is_file() or CHECKOUT is None:
        return inside
    return CHECKOUT / DEMO_MODEL_RELPATH


def bench_binary() -> Path | None:
    """bitnet-bench: the wheel's copy, else the newest one a checkout build made."""
    inside = PACKAGE_DIR / "bin" / "bitnet-bench"
    if inside.is_file():
        return inside
    built = newest_build_output("bin/bitnet-bench")
    return built[0] if built else None
