"""`setup_env.py`: build the engine, then optionally download and convert a model.

bitnet.cpp's script and flags. Unlike bitnet.cpp, nothing is generated per model: the kernels
are picked at run time from the CPU, so one build runs every model and I2_S is the only
ternary format we produce (tl1/tl2 were bitnet.cpp's per-model LUT layouts).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

from bitnet.cli.common import (
    ArgumentParser,
    default_threads,
    fail,
    int_at_least,
    one_line,
    run_main,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SUBDIR = "build/release"
# Logs go under build/ with the rest of what a build writes (bitnet.cpp's default was ./logs).
DEFAULT_LOG_DIR = str(REPO_ROOT / "build" / "logs") if (REPO_ROOT / "CMakeLists.txt").is_file() else "logs"
TUNE_SECONDS = 30  # what the autotune is meant to take (bitnet/tune.py); said in --help


class HFModel(NamedTuple):
    name: str  # folder under the models directory, as bitnet.cpp names it
    family: str  # key of FAMILIES


# Model families: None = supported, else the reason we cannot convert it. The converter finds
# the family itself from config.json (bitnet/convert/families.py); these keys only label the list.
FAMILIES: dict[str, str | None] = {
    "bitnet-b1.58": None,  # BitNetForCausalLM (2B-4T): relu2, sub-norms, tied head
    "bitnet": None,  # 1bitLLM's BitnetForCausalLM: fp16 masters, SiLU, sub-norms, SentencePiece
    "llama": None,  # LlamaForCausalLM + bitnet quantization_config: Llama3-8B-1.58, Falcon3, Falcon-E
    "embedding": None,  # bitnet-embedding-0.6b / -270m: Qwen3 / Gemma3 backbones (embedding_models.py)
}

# bitnet.cpp's 17 Hugging Face repositories, plus the bf16 master of 2B-4T.
HF_MODELS: dict[str, HFModel] = {
    "microsoft/BitNet-b1.58-2B-4T": HFModel("BitNet-b1.58-2B-4T", "bitnet-b1.58"),
    "microsoft/bitnet-b1.58-2B-4T-bf16": HFModel("bitnet-b1.58-2B-4T-bf16", "bitnet-b1.58"),
    "1bitLLM/bitnet_b1_58-large": HFModel("bitnet_b1_58-large", "bitnet"),
    "1bitLLM/bitnet_b1_58-3B": HFModel("bitnet_b1_58-3B", "bitnet"),
    "HF1BitLLM/Llama3-8B-1.58-100B-tokens": HFModel("Llama3-8B-1.58-100B-tokens", "llama"),
    "tiiuae/Falcon3-1B-Instruct-1.58bit": HFModel("Falcon3-1B-Instruct-1.58bit", "llama"),
    "tiiuae/Falcon3-3B-1.58bit": HFModel("Falcon3-3B-1.58bit", "llama"),
    "tiiuae/Falcon3-3B-Instruct-1.58bit": HFModel("Falcon3-3B-Instruct-1.58bit", "llama"),
    "tiiuae/Falcon3-7B-1.58bit": HFModel("Falcon3-7B-1.58bit", "llama"),
    "tiiuae/Falcon3-7B-Instruct-1.58bit": HFModel("Falcon3-7B-Instruct-1.58bit", "llama"),
    "tiiuae/Falcon3-10B-1.58bit": HFModel("Falcon3-10B-1.58bit", "llama"),
    "tiiuae/Falcon3-10B-Instruct-1.58bit": HFModel("Falcon3-10B-Instruct-1.58bit", "llama"),
    "tiiuae/Falcon-E-1B-Base": HFModel("Falcon-E-1B-Base", "llama"),
    "tiiuae/Falcon-E-1B-Instruct": HFModel("Falcon-E-1B-Instruct", "llama"),
    "tiiuae/Falcon-E-3B-Base": HFModel("Falcon-E-3B-Base", "llama"),
    "tiiuae/Falcon-E-3B-Instruct": HFModel("Falcon-E-3B-Instruct", "llama"),
    "microsoft/bitnet-embedding-270m": HFModel("bitnet-embedding-270m", "embedding"),
    "microsoft/bitnet-embedding-0.6b": HFModel("bitnet-embedding-0.6b", "embedding"),
}

# What a conversion needs from a repository (weights, config, tokenizer); skips other formats.
HF_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]  # only with --allow-pickle

QUANT_TYPES = ("i2_s", "tl1", "tl2")
EMBEDDING_TYPES = ("f16", "q8_0", "q6_k")  # --quant-embd; bare means f16, as in bitnet.cpp
PRODUCED_QUANT_TYPES = ("i2_s",)
LOG_TAIL_LINES = 25
# Build progress as ninja (`[12/40] ...`) and make (`[ 30%] ...`) print it.
NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")
MAKE_PROGRESS = re.compile(r"^\[\s*(\d+)%\]")

DESCRIPTION = """\
Build the engine (CMake + Ninja, Release, clang when present) into <repo>/build/release (the
library in build/release/lib, bitnet-bench in build/release/bin; nothing is written outside
build/), tune the kernels for this CPU (the preset goes to a per-user cache,
$XDG_CACHE_HOME/bitnet/presets, or --tune-dir), then optionally prepare a model:
  -hr REPO    download a Hugging Face checkpoint into <--model-dir, default models>/<name>
              and convert it;
  -md DIR     convert the Hugging Face checkpoint already in DIR.
The model is written to <model folder>/ggml-model-i2_s.gguf (an existing one is kept), ready
for `python run_inference.py -m <that file>`. Without -hr / -md the script only builds and tunes.

Compatibility with bitnet.cpp: -q tl1 / tl2 are refused (exit 2): our kernels are picked at
run time from the CPU and need no per-model lookup-table format, so I2_S is the one ternary
format produced and it runs every model."""


def build_parser() -> ArgumentParser:
    repos = "\n".join(f"  {repo:38s} {_support_note(m.family)}" for repo, m in HF_MODELS.items())
    p = ArgumentParser(prog="setup_env.py", description=DESCRIPTION,
                       epilog=f"Hugging Face repositories (-hr), and whether they run:\n{repos}\n\n"
                              "exit status: 0 ok, 1 failure, 2 bad flags, 130 Ctrl+C.")
    p.add_flag("hf_repo", metavar="REPO", default=None,
               help="Hugging Face repository to download and convert (list below)")
    p.add_flag("model_dir", metavar="DIR", default=None,
               help="folder of a Hugging Face checkpoint to convert; with -hr, the folder to "
                    "download into (default: models)")
    p.add_flag("quant_type", metavar="{i2_s,tl1,tl2}", default="i2_s", choices=QUANT_TYPES,
               help="weight format; only i2_s is produced (default: i2_s)")
    p.add_flag("quant_embd", nargs="?", const="f16", default=None, choices=EMBEDDING_TYPES,
               metavar="{f16,q8_0,q6_k}",
               help="store the token embeddings (a tied model's output head too) as F16, as bitnet.cpp "
                    "does, or as the type given (without this flag: as the checkpoint has them); "
                    "q8_0 / q6_k, ggml's 8-bit and 6-bit types, are smaller and faster but no "
                    "longer lossless")
    p.add_flag("use_pretuned", action="store_true",
               help="do not tune: use the kernel preset shipped for this CPU (preset_kernels/; built-in "
                    "defaults where none ships), removing this user's tuned one")
    p.add_flag("skip_tune", action="store_true",
               help=f"after the build, do not run the kernel autotune (about {TUNE_SECONDS} s); keep any preset")
    p.add_argument("--tune-dir", metavar="DIR", default=None,
                   help="write the tuned preset into DIR instead of this user's cache "
                        "($XDG_CACHE_HOME/bitnet/presets); the engine reads it with BITNET_PRESET_DIR=DIR")
    p.add_flag("log_dir", metavar="DIR", default=DEFAULT_LOG_DIR,
               help="folder for the build and download logs (default: %(default)s)")
    p.add_flag("skip_build", action="store_true",
               help="do not build (or tune) the engine (e.g. it was installed with pip)")
    p.add_flag("jobs", metavar="N", type=int_at_least(1), default=default_threads(),
               help="parallel build jobs (default: the cores available, %(default)s here)")
    p.add_flag("allow_pickle", action="store_true",
               help="convert a pickle checkpoint (pytorch_model.bin, *.pt) when the folder has "
                    "no safetensors; pickle files can run code when loaded: only for files you trust")
    return p


def _support_note(family: str) -> str:
    reason = FAMILIES[family]
    return "yes" if reason is None else f"no: {reason}"


# ---- build ----


def build_engine(log_dir: Path, jobs: int) -> int:
    """Configure and build with CMake, logging to log_dir; returns an exit code."""
    if not (REPO_ROOT / "CMakeLists.txt").is_file():
        print(f"note: no CMakeLists.txt in {REPO_ROOT} (an installed package?): nothing to build",
              file=sys.stderr)
        return 0
    cmake = shutil.which("cmake")
    if cmake is None:
        return fail("cmake not found: install it (`pip install cmake ninja` or "
                    "`apt-get install cmake ninja-build`) and run setup_env.py again")
    log_dir.mkdir(parents=True, exist_ok=True)
    build_dir = REPO_ROOT / BUILD_SUBDIR
    # One configuration, the engine and bitnet-bench only: the native test binaries are built by
    # the test install (`pip install -e ".[test]"`), the layout probes on request (BITNET_BUILD_PROBES).
    configure = [cmake, "-S", str(REPO_ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 "-DBITNET_BUILD_TESTS=OFF", "-DBITNET_BUILD_PROBES=OFF"]
    # Ninja when present; an existing build folder keeps the generator it was made with.
    if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
        configure[1:1] = ["-G", "Ninja"]
    steps = [("configuring the build", configure, "generate_build_files.log"),
             ("compiling the engine", [cmake, "--build", str(build_dir), f"-j{jobs}"],
              "compile.log")]
    for label, cmd, log_name in steps:
        code = run_logged(label, cmd, log_dir / log_name)
        if code != 0:
            return code
    return 0


def run_logged(label: str, cmd: list[str], log_path: Path) -> int:
    """Run cmd with its output going to log_path and a one-line status on stderr."""
    status = StatusLine(label)
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", cwd=REPO_ROOT)
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                status.progress(line)
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    if code != 0:
        status.finish("failed")
        print("\n".join(tail), file=sys.stderr)
        return fail(f"{label} failed (exit {code}); the full log is {log_path}")
    status.finish(f"done in {time.monotonic() - start:.1f} s")
    return 0


class StatusLine:
    """`label ... [12/40]`: rewritten in place on a terminal, start and end lines otherwise."""

    def __init__(self, label: str):
        self.label = label
        self.tty = sys.stderr.isatty()
        self.shown = ""
        self._show(f"{label} ...", final=not self.tty)

    def progress(self, line: str) -> None:
        m = NINJA_PROGRESS.match(line)
        text = f"[{m.group(1)}/{m.group(2)}]" if m else None
        if m is None and (m := MAKE_PROGRESS.match(line)):
            text = f"[{m.group(1)}%]"
        if text and self.tty:
            self._show(f"{self.label} ... {text}")

    def finish(self, outcome: str) -> None:
        self._show(f"{self.label} ... {outcome}", final=True)

    def _show(self, text: str, final: bool = False) -> None:
        if self.tty:
            pad = " " * max(0, len(self.shown) - len(text))
            sys.stderr.write("\r" + text + pad + ("\n" if final else ""))
            self.shown = "" if final else text
        elif final:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


# ---- model ----


def download(repo: str, dest: Path, allow_pickle: bool = False) -> int:
    """snapshot_download repo into dest (progress bars; an interrupted download resumes where it
    stopped); one line and exit 1 if that cannot be done."""
    hint = f"download {repo} yourself and pass its folder with --model-dir"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return fail(f"huggingface_hub is not installed (pip install huggingface_hub); or {hint}")
    print(f"downloading {repo} into {dest} ...", file=sys.stderr)
    try:
        patterns = HF_ALLOW_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
        snapshot_download(repo_id=repo, local_dir=str(dest), allow_patterns=patterns)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001  (the hub raises many types: HTTP, offline, DNS)
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            reason = "offline mode: HF_HUB_OFFLINE is set"
        else:
            lines = [s for s in str(exc).splitlines() if s.strip()]
            reason = one_line(lines[0]) if lines else type(exc).__name__
        return fail(f"cannot download {repo} ({reason}); check the network, or {hint}")
    return 0


def convert(model_dir: Path, outfile: Path, embedding_type: str | None, allow_pickle: bool = False) -> None:
    """Convert the checkpoint in model_dir to an I2_S GGUF, the token embedding as embedding_type
    (None: as stored). The writer renames the file into place only when complete, so an
    interrupted run leaves no half file to be mistaken for a model."""
    from bitnet.convert import hf_bitnet  # numpy/safetensors: only when a model is converted

    print(f"converting {model_dir} to {outfile} ...", file=sys.stderr)
    if _is_embedding_model(model_dir):
        from bitnet.convert.embedding_models import convert_embedding

        convert_embedding(model_dir, outfile, "i2_s", progress=True)
        return
    hf_bitnet.convert(model_dir, outfile, "i2_s", token_embedding_type=embedding_type, progress=True,
                      allow_pickle=allow_pickle)


def _is_embedding_model(model_dir: Path) -> bool:
    from bitnet.convert.embedding_models import ARCHITECTURES, FAMILIES as EMBEDDING_FAMILIES

    try:
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    archs = cfg.get("architectures") or [] if isinstance(cfg, dict) else []
    return cfg.get("model_type") in EMBEDDING_FAMILIES or any(a in ARCHITECTURES for a in archs)


def model_folder(args, parser: ArgumentParser) -> Path:
    """The checkpoint folder the flags name, checked before anything slow happens."""
    if args.hf_repo is None:
        model_dir = Path(args.model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory not found: {model_dir} (a folder with "
                                    f"config.json and *.safetensors, or use -hr REPO)")
        return model_dir
    entry = HF_MODELS.get(args.hf_repo)
    if entry is None:
        parser.error(f"unknown --hf-repo {args.hf_repo!r}: --help lists the known ones; for "
                     f"another checkpoint, download it yourself and use --model-dir")
    reason = FAMILIES[entry.family]
    if reason is not None:
        supported = ", ".join(r for r, m in HF_MODELS.items() if FAMILIES[m.family] is None)
        raise ValueError(f"{args.hf_repo}: {reason}; supported: {supported}")
    return Path(args.model_dir or "models") / entry.name


def prepare_model(model_dir: Path, args) -> int:
    if args.hf_repo is not None:
        code = download(args.hf_repo, model_dir, args.allow_pickle)
        if code != 0:
            return code
    outfile = model_dir / "ggml-model-i2_s.gguf"
    if outfile.is_file() and outfile.stat().st_size > 0:
        print(f"{outfile} already exists: kept (delete it to convert again)", file=sys.stderr)
    else:
        convert(model_dir, outfile, args.quant_embd, args.allow_pickle)
    try_cmd = (f"python utils/embedding.py -m {outfile} -p \"hello world\"" if _is_embedding_model(model_dir) else
               f"python run_inference.py -m {outfile} -p \"You are a helpful assistant\" -cnv")  # fmt: skip
    print(f"model ready: {outfile}\ntry: {try_cmd}", file=sys.stderr)
    return 0


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quant_type not in PRODUCED_QUANT_TYPES:
        parser.error(f"-q {args.quant_type} is not produced: our kernels are chosen at run time "
                     f"and need no per-model LUT format; use -q i2_s, the default")
    wants_model = args.hf_repo is not None or args.model_dir is not None
    model_dir = model_folder(args, parser) if wants_model else None
    code = install_python_dependencies(Path(args.log_dir))
    if code == 0 and not args.skip_build:
        code = build_engine(Path(args.log_dir), args.jobs)
        if code == 0:
            tune_kernels(args)  # a fresh build: tune it for this CPU
    if code != 0:
        return code
    return 0 if model_dir is None else prepare_model(model_dir, args)


def install_python_dependencies(log_dir: Path) -> int:
    """pip-install the runtime packages this interpreter lacks (pyproject.toml lists them)."""
    from bitnet.cli import python_deps

    pyproject = REPO_ROOT / "pyproject.toml"
    if not pyproject.is_file():
        return 0  # an installed package: pip installed its dependencies with it
    needed = python_deps.missing(python_deps.runtime_requirements(pyproject))
    if not needed:
        return 0
    print(f"installing Python packages: {' '.join(needed)} ...", file=sys.stderr)
    log = log_dir / "pip_install.log"
    if python_deps.install(needed, log) != 0:
        return fail(f"pip could not install {' '.join(needed)}; see {log}")
    return 0


def tune_kernels(args) -> None:
    """The kernel preset for this CPU: the shipped one with --use-pretuned, else a short autotune
    (bitnet/tune.py) written to this user's cache (or --tune-dir). A failed tune is not fatal: the
    built-in defaults are good too."""
    from bitnet import engine, paths

    if args.use_pretuned:
        tuned = paths.tuned_preset_dir() / f"{engine.cpu_signature()}.json"
        if args.tune_dir is None and tuned.is_file() and "BITNET_PRESET_DIR" not in os.environ:
            tuned.unlink()
            print(f"removed this user's tuned preset {tuned}", file=sys.stderr)
        preset = engine.preset_path()
        found = f"using {preset}" if preset.is_file() else "none shipped for this CPU: using built-in defaults"
        print(f"kernel preset ({engine.cpu_signature()}): {found}", file=sys.stderr)
        return
    if args.skip_tune:
        return
    from bitnet.tune import autotune

    out_dir = Path(args.tune_dir) if args.tune_dir is not None else engine.preset_dir()
    try:
        path = autotune(out_dir, n_threads=args.jobs, progress=False, bar=True, seconds=TUNE_SECONDS)
        print(f"kernel autotune: wrote {path}", file=sys.stderr)
        if args.tune_dir is not None:
            print(f"note: the engine reads it with BITNET_PRESET_DIR={out_dir}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 (any failure here only costs speed)
        print(f"warning: kernel autotune failed ({one_line(str(e))}); using built-in defaults", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
