"""run_inference_server.py and `python -m bitnet.server` as a user runs them (subprocess): flag
errors exit 2 with one line, a missing or mis-pinned model or a port in use exit 1 with one
line, and SIGTERM lets the requests in flight finish before a clean exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.test_server_support import sse_payloads

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "run_inference_server.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHDYNAMO_DISABLE": "1"}
# A server whose decode steps take 20 ms: slow enough that SIGTERM lands mid-generation.
SLOW_SERVER = (
    "import sys, time; from bitnet.server.scheduler import Scheduler; step = Scheduler._decode; "
    "Scheduler._decode = lambda self: (time.sleep(0.02), step(self))[1]; "
    "from bitnet.server.cli import main; sys.exit(main())"
)


def run_script(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=ENV, check=False)  # fmt: skip


def assert_one_error_line(proc, code: int, *texts: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for text in texts:
        assert text in lines[0], lines[0]


def test_help_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "bitnet.server", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=ENV, check=False)  # fmt: skip
    assert proc.returncode == 0 and "--parallel" in proc.stdout and "--api-key-file" in proc.stdout


@pytest.mark.parametrize("args, text", [
    ((), "required: -m/--model"),
    (("-m", "x.gguf", "--port", "70000"), "must be <= 65535"),
    (("-m", "x.gguf", "--parallel", "0"), "must be >= 1"),
    (("-m", "x.gguf", "--api-key", "a", "--api-key-file", "f"), "not allowed with argument"),
    (("-m", "x.gguf", "--api-key", ""), "non-empty key"),
    (("-m", "x.gguf", "--model-sha256", "abc"), "64 hexadecimal digits"),
])  # fmt: skip
def test_bad_flags_exit_2(args, text):
    proc = run_script(*args)
    assert_one_error_line(proc, 2, text)
    assert "(see --help)" in proc.stderr


def test_missing_model_and_key_file_exit_1(tmp_path, tiny_gguf):
    assert_one_error_line(run_script("-m", tmp_path / "none.gguf"), 1, "model file not found")
    assert_one_error_line(run_script("-m", tiny_gguf, "--api-key-file", tmp_path / "keys"), 1,
                          "API key file not found")
    (tmp_path / "empty").write_text("\n\n")
    assert_one_error_line(run_script("-m", tiny_gguf, "--api-key-file", tmp_path / "empty"), 1, "holds no key")


def test_wrong_pin_and_bad_file_exit_1_after_loading(tmp_path, tiny_gguf):
    assert_one_error_line(run_script("-m", tiny_gguf, "--port", 0, "--model-sha256", "0" * 64), 1,
                          "SHA-256 mismatch")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 10)
    assert_one_error_line(run_script("-m", junk, "--port", 0), 1, "not a GGUF file")


def test_port_in_use_exits_1(tiny_gguf):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_one_error_line(run_script("-m", tiny_gguf, "--port", port), 1, f"cannot listen on 127.0.0.1:{port}")


def start_server(*args) -> tuple[subprocess.Popen, str]:
    """Start a server on a free port; its URL, read from its 'listening on' line."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, *map(str, args), "--port", "0"], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stderr.readline()
    if "listening on" not in line:
        proc.kill()
        pytest.fail(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, line.split("listening on ")[1].split()[0]


def test_sigterm_drains_requests_in_flight(tiny_gguf, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("secret-key\n")
    proc, url = start_server("-m", tiny_gguf, "-t", 1, "-c", 256, "--parallel", 2, "--api-key-file", keys)
    try:
        headers = {"Authorization": "Bearer secret-key"}
        body = {"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        results = {}

        def stream(name):
            with httpx.stream("POST", url + "/v1/completions", json=body, headers=headers, timeout=60) as r:
                results[name] = sse_payloads(r.iter_lines())

        clients = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 20
        while not all(s["state"] == "generating" for s in httpx.get(url + "/slots", headers=headers).json()):
            assert time.monotonic() < deadline, "the requests did not start"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        for t in clients:
            t.join(60)
        code = proc.wait(60)
        assert code == 0, proc.stderr.read()
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    for payloads in results.values():  # both streams ran to their end
        assert payloads[-1] == "[DONE]"
        assert payloads[-2]["usage"]["completion_tokens"] >= 1
        reasons = [p["choices"][0]["finish_reason"] for p in payloads[:-2] if p["choices"]]
        assert reasons[-1] in ("length", "stop")
    texts = ["".join(p["choices"][0]["text"] for p in payloads[:-2] if p["choices"]) for payloads in results.values()]
    assert len(texts) == 2 and texts[0] == texts[1]  # the same greedy prompt, the same text
