"""The command-line scripts, run as a user runs them (subprocess), on the tiny test model.

Every failure must end with exactly one `error: ...` line on stderr, exit 2 for bad flags and 1
for bad files, and never a traceback.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN_INFERENCE = REPO / "run_inference.py"
SETUP_ENV = REPO / "setup_env.py"
SUMMARY = re.compile(r"^prompt: \d+ tokens, (\d+\.\d|-) tok/s \| generation: \d+ tokens, "
                     r"(\d+\.\d|-) tok/s \| \d+ threads?$")
# What runs, said once before the text (issue 16): model, kernel set, threads, context.
STARTUP = re.compile(r"^model \S+\.gguf \(.+\) \| kernels \w+ \| \d+ threads? \| context \d+ tokens$")
ARCH = b"bitnet-b1.58"


def run(script: Path, *args, stdin: str | None = None, env: dict | None = None, timeout: float = 60):
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(script), *map(str, args)], input=stdin, check=False,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


def assert_one_error_line(proc, code: int):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def assert_last_line_error(proc, code: int):
    """Like assert_one_error_line, where status lines may come before the error."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [s for s in proc.stderr.splitlines() if s.startswith("error")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr


# ---- run_inference.py: generation ----


def test_prompt_run_streams_text_and_prints_summary(tiny_gguf):
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-p", "Hello world", "-n", 8, "-t", 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Hello world") and proc.stdout.endswith("\n")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and STARTUP.match(lines[0]) and SUMMARY.match(lines[1]), proc.stderr
    assert "| 2 threads | context 2048 tokens" in lines[0]


def test_verbose_says_which_engine_preset_and_tuning(tiny_gguf):
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-p", "Hello", "-n", 2, "-v", "-c", 64)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert STARTUP.match(lines[0]) and "context 64 tokens" in lines[0], proc.stderr
    assert "libbitnet" in proc.stderr and "prefetch_bytes" in proc.stderr and "kernel sets here" in proc.stderr
    assert SUMMARY.match(lines[-1])


def test_greedy_output_equals_api(tiny_gguf, tiny_model):
    prompt, n = "The quick brown fox", 12
    expected = tiny_model.generate(prompt, max_tokens=n, temperature=0)
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-p", prompt, "-n", n, "-temp", 0, "-t", 2, "-c", 256)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == prompt + expected + "\n"


def test_prompt_file_and_no_display_prompt(tiny_gguf, tiny_model, tmp_path):
    prompt = "Once upon a time"
    (tmp_path / "prompt.txt").write_text(prompt, encoding="utf-8")
    expected = tiny_model.generate(prompt, max_tokens=6, temperature=0)
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-f", tmp_path / "prompt.txt", "-n", 6, "--temp", 0,
               "--no-display-prompt")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected + "\n"


def test_empty_prompt_generates_from_bos(tiny_gguf):
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-n", 4, "-temp", 0)
    assert proc.returncode == 0, proc.stderr
    startup, summary = proc.stderr.strip().splitlines()
    assert STARTUP.match(startup) and SUMMARY.match(summary)


def test_seed_makes_sampling_repeatable(tiny_gguf):
    args = ("-m", tiny_gguf, "-p", "Hello", "-n", 16, "-temp", 1.0, "--seed", 1234)
    first, second = run(RUN_INFERENCE, *args), run(RUN_INFERENCE, *args)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout


# ---- run_inference.py: chat ----


def test_chat_two_turns_then_eof(tiny_gguf, tiny_model):
    turns = ["Hi there", "How are you?"]
    messages = [{"role": "system", "content": "Be brief."}]
    expected = ""
    for text in turns:
        messages.append({"role": "user", "content": text})
        out = tiny_model.create_chat_completion(messages, max_tokens=8, temperature=0)
        reply = out["choices"][0]["message"]["content"]
        messages.append({"role": "assistant", "content": reply})
        expected += reply + "\n"
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-cnv", "-p", "Be brief.", "-n", 8, "-temp", 0,
               stdin="\n".join(turns) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected
    assert "error" not in proc.stderr and "Traceback" not in proc.stderr


def test_chat_exit_command_stops(tiny_gguf):
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-cnv", "-n", 4, stdin="/exit\nnever answered\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_chat_message_over_context_is_one_error_and_goes_on(tiny_gguf):
    long_message = "word " * 200
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, "-cnv", "-c", 64, "-n", 4, "-temp", 0,
               stdin=f"{long_message}\nhi\n")
    assert proc.returncode == 0, proc.stderr
    errors = [s for s in proc.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1 and "context" in errors[0], proc.stderr
    assert proc.stdout.endswith("\n")  # the second, short message was answered
    assert "Traceback" not in proc.stderr


def test_ctrl_c_exits_130_without_traceback(tiny_gguf):
    proc = subprocess.Popen([sys.executable, str(RUN_INFERENCE), "-m", str(tiny_gguf), "-cnv",
                             "-n", "4", "-temp", "0"], cwd=REPO, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write("hello\n")
    proc.stdin.flush()
    proc.stdout.readline()  # the first reply has been written: the loop waits for input now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err and STARTUP.match(err.strip()), err  # the start-up line only


# ---- run_inference.py: bad input ----


def test_help():
    proc = run(RUN_INFERENCE, "--help")
    assert proc.returncode == 0
    for flag in ("-m", "-p", "-n", "-t", "-c", "-temp", "-cnv", "--top-k", "--top-p", "--seed"):
        assert flag in proc.stdout


def test_missing_model_file(tmp_path):
    assert_one_error_line(run(RUN_INFERENCE, "-m", tmp_path / "nope.gguf", "-p", "hi"), 1)


def test_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("this is a text file, not a model at all\n" * 4)
    assert_one_error_line(run(RUN_INFERENCE, "-m", path, "-p", "hi"), 1)


def test_truncated_gguf(tiny_gguf, tmp_path):
    data = Path(tiny_gguf).read_bytes()
    path = tmp_path / "half.gguf"
    path.write_bytes(data[: len(data) // 2])
    assert_one_error_line(run(RUN_INFERENCE, "-m", path, "-p", "hi"), 1)


def test_unknown_architecture(tiny_gguf, tmp_path):
    # Rename the architecture everywhere (value and key prefixes) with a same-length string:
    # the file stays a well-formed GGUF that no table entry matches.
    data = Path(tiny_gguf).read_bytes()
    assert data.count(ARCH) > 1
    path = tmp_path / "alien.gguf"
    path.write_bytes(data.replace(ARCH, b"notanarch-42"))
    proc = run(RUN_INFERENCE, "-m", path, "-p", "hi")
    assert_one_error_line(proc, 1)
    assert "architecture" in proc.stderr


def test_missing_prompt_file(tiny_gguf, tmp_path):
    assert_one_error_line(run(RUN_INFERENCE, "-m", tiny_gguf, "-f", tmp_path / "none.txt"), 1)


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["-n", "abc"],
    ["-n", "-2"],
    ["-t", "0"],
    ["-c", "0"],
    ["-temp", "-1"],
    ["-temp", "nan"],
    ["--top-p", "2"],
    ["--top-p", "0"],
    ["--min-p", "1.5"],
    ["-p", "a", "-f", "b"],
], ids=lambda a: " ".join(a))
def test_bad_flags(tiny_gguf, args):
    proc = run(RUN_INFERENCE, "-m", tiny_gguf, *args)
    assert_one_error_line(proc, 2)
    assert proc.stderr.rstrip().endswith("(see --help)")


def test_without_model_flag_the_demo_model_runs():
    proc = run(RUN_INFERENCE, "-p", "It is a truth", "-n", 4, "-temp", 0, "-t", 1)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("It is a truth") and "generation: " in proc.stderr


# ---- setup_env.py ----


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".gguf":
            shutil.copy(f, dst / f.name)
    return dst


def test_setup_help():
    proc = run(SETUP_ENV, "--help")
    assert proc.returncode == 0
    for text in ("-hr", "-md", "-q", "--quant-embd", "--use-pretuned", "microsoft/BitNet-b1.58-2B-4T"):
        assert text in proc.stdout


def test_setup_converts_model_dir(tiny_checkpoint, tmp_path):
    from bitnet.convert.gguf_reader import read_gguf

    model_dir = copy_checkpoint(Path(tiny_checkpoint), tmp_path / "ckpt")
    proc = run(SETUP_ENV, "--skip-build", "-md", model_dir, "--quant-embd")
    assert proc.returncode == 0, proc.stderr
    out = model_dir / "ggml-model-i2_s.gguf"
    assert out.read_bytes()[:4] == b"GGUF"
    embd = read_gguf(out).tensors["token_embd.weight"]
    assert embd.ggml_type == 1  # F16
    again = run(SETUP_ENV, "--skip-build", "-md", model_dir)
    assert again.returncode == 0 and "already exists" in again.stderr
    ran = run(RUN_INFERENCE, "-m", out, "-p", "hi", "-n", 2)
    assert ran.returncode == 0, ran.stderr


def test_setup_hf_repo_offline(tmp_path):
    proc = run(SETUP_ENV, "--skip-build", "-hr", "microsoft/BitNet-b1.58-2B-4T", "-md", tmp_path,
               env={"HF_HUB_OFFLINE": "1"})
    assert_last_line_error(proc, 1)
    assert "--model-dir" in proc.stderr


def test_setup_hf_repo_embedding_model_is_accepted(tmp_path):
    # Every bitnet.cpp repository is supported now (the embedding models too): offline, -hr gets as
    # far as the download and fails there with one line.
    proc = run(SETUP_ENV, "--skip-build", "-hr", "microsoft/bitnet-embedding-270m", "-md", tmp_path,
               env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot download" in errors[0]


def test_setup_unknown_hf_repo():
    assert_one_error_line(run(SETUP_ENV, "--skip-build", "-hr", "someone/not-a-model"), 2)


@pytest.mark.parametrize("qtype", ["tl1", "tl2"])
def test_setup_lut_quant_types_are_refused(qtype):
    proc = run(SETUP_ENV, "--skip-build", "-q", qtype)
    assert_one_error_line(proc, 2)
    assert "i2_s" in proc.stderr


def test_setup_missing_model_dir(tmp_path):
    assert_one_error_line(run(SETUP_ENV, "--skip-build", "-md", tmp_path / "none"), 1)


def fake_cmake(tmp_path: Path, exit_code: int) -> dict:
    """A `cmake` on PATH that prints ninja-style progress and exits with exit_code."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "cmake"
    script.write_text("#!/bin/sh\n"
                      "for i in 1 2 3; do echo \"[$i/3] Building CXX object step$i.o\"; done\n"
                      "echo 'src/x.cpp:1:1: error: something broke'\n"
                      f"exit {exit_code}\n")
    script.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert shutil.which("cmake", path=env["PATH"]) == str(script)  # never the real build here
    return env


def test_setup_build_logs_to_log_dir(tmp_path):
    proc = run(SETUP_ENV, "-ld", tmp_path / "logs", "--skip-tune", env=fake_cmake(tmp_path, 0))
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "logs" / "compile.log").read_text()
    assert log.startswith(f"$ {tmp_path / 'bin' / 'cmake'} --build") and "step3.o" in log
    assert "step3" not in proc.stderr  # the build output goes to the log, not the terminal


def test_setup_use_pretuned_takes_the_shipped_preset(tmp_path):
    from bitnet import engine

    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / f"{engine.cpu_signature()}.json").write_text('{"prefetch_bytes": 4096}')
    env = {**fake_cmake(tmp_path, 0), "BITNET_PRESET_DIR": str(presets)}
    proc = run(SETUP_ENV, "-ld", tmp_path / "logs", "--use-pretuned", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"using {presets}" in proc.stderr
    proc = run(SETUP_ENV, "-ld", tmp_path / "logs", "--use-pretuned", env={**env, "BITNET_PRESET_DIR": str(tmp_path)})
    assert proc.returncode == 0 and "none shipped for this CPU" in proc.stderr


def test_setup_build_failure_shows_log_tail(tmp_path):
    proc = run(SETUP_ENV, "-ld", tmp_path / "logs", env=fake_cmake(tmp_path, 1))
    assert_last_line_error(proc, 1)
    assert "something broke" in proc.stderr
    assert str(tmp_path / "logs") in proc.stderr.splitlines()[-1]
