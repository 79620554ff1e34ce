"""The hard wall around a model's chat template: it renders in a worker process we can stop.

The sandbox hooks (chat_sandbox.py) refuse every expensive construct we know of with a clear
error, but a render in this process holds the GIL: one we did not foresee would freeze a server
(no /health, no SIGTERM). So a model's own template renders in a long-lived worker process
(`python -m bitnet.chat_worker`), one JSON line in and one out, with:

- a wall-clock deadline (RENDER_DEADLINE_S) after which the worker is killed and the request
  answered with ChatTemplateLimitError; a fresh worker starts for the next render;
- an address-space limit (RLIMIT_AS) and a CPU-time limit (RLIMIT_CPU, re-armed before each
  render) set inside the worker, so it dies by itself even if nobody waits for it;
- its own session, and it exits when its stdin closes (when the model is closed or we exit).

A long-lived worker costs a pipe round trip per render (about 0.1 ms for a short chat) instead
of a process start (about 100 ms). BitNet's built-in template is ours, so it renders in-process.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from bitnet import chat
from bitnet.chat_sandbox import ChatTemplateLimitError

RENDER_DEADLINE_S = 1.5  # a real template renders in milliseconds; answered within 2 s
MAX_TEMPLATE_CHARS = 64 << 10  # real templates, tool-calling ones included, stay under ~20k; compiling
# costs ~20 us a character, so this bounds the check at load to about a second
START_TIMEOUT_S = 30.0  # python + jinja2 start in ~0.1 s; a loaded machine may take longer
WORKER_BASE_MEMORY = 256 << 20  # address space of the worker beyond 16 x its largest request
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


class TemplateWorker:
    """One worker process, started on first use and again after it was stopped; thread-safe
    (renders take turns)."""

    def __init__(self, memory_bytes: int):
        self.memory_bytes = memory_bytes
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._compiled: set[str] = set()  # templates the running worker has compiled

    def render(self, request: dict, deadline_s: float = RENDER_DEADLINE_S) -> tuple[str, str]:
        with self._lock:
            proc = self._ensure_started()
            if request["template"] not in self._compiled:  # compiling is not rendering: its own, longer wait
                self._compiled.add(request["template"])
                compiled = self._exchange(proc, {"compile": request["template"]}, START_TIMEOUT_S,
                                          f"chat template did not compile within {START_TIMEOUT_S:g} s; refusing it")
                if compiled[0] != "text":
                    return compiled
                proc = self._ensure_started()
            return self._exchange(proc, request, deadline_s,
                                  f"chat template did not render within {deadline_s:g} s or within "
                                  f"{self.memory_bytes >> 20} MiB; refusing it")

    def _exchange(self, proc: subprocess.Popen, request: dict, deadline_s: float, late: str) -> tuple[str, str]:
        """One request line out, one reply line back within deadline_s; past it the worker is
        stopped and the answer is ("limit", late)."""
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode("ascii"))  # escapes keep lone surrogates intact
            proc.stdin.flush()
        except OSError:
            self._stop()
            return "limit", "the chat template worker stopped; refusing the template"
        reply = self._read_line(proc, deadline_s)
        if reply is None:
            self._stop()
            return "limit", late
        try:
            outcome, value = json.loads(reply)
        except ValueError:
            return "limit", "the chat template worker answered nonsense; refusing the template"
        return str(outcome), str(value)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def start(self) -> None:
        """Start the worker now (else the first render does, ~0.1-0.5 s)."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._compiled = set()
        env = dict(os.environ)
        # The worker is pure Python (jinja2), it never loads the engine. A preloaded library such as
        # a sanitizer runtime (CI's ASan job preloads libasan) reserves far more address space than
        # the worker's RLIMIT_AS allows, and the worker would die at start.
        env.pop("LD_PRELOAD", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bitnet.chat_worker", str(self.memory_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,  # a terminal's Ctrl+C is the parent's to handle
        )  # fmt: skip
        if self._read_line(self._proc, START_TIMEOUT_S) != b"ready":
            self._stop()
            raise ChatTemplateLimitError("the chat template worker process did not start")
        return self._proc

    @staticmethod
    def _read_line(proc: subprocess.Popen, timeout_s: float) -> bytes | None:
        """One line from the worker, or None if it does not come before the deadline (or the
        worker died)."""
        fd = proc.stdout.fileno()
        buf = bytearray()
        end = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                left = end - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return None
                buf += chunk
                if buf.endswith(b"\n"):
                    return bytes(buf[:-1])

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class ChatTemplate:
    """A model's chat template: compiled and checked once (at model load), then rendered in the
    worker process; a missing or broken one is BitNet's built-in template (with a warning)."""

    def __init__(self, template: str | None, max_message_bytes: int = 1 << 20):
        self.source = template
        self._worker: TemplateWorker | None = None
        self._trusted = not template or template == chat.BITNET_CHAT_TEMPLATE
        if not self._trusted:
            problem = (f"{len(template)} characters, over the limit of {MAX_TEMPLATE_CHARS}"
                       if len(template) > MAX_TEMPLATE_CHARS else chat.check_template(template))
            if problem is not None:
                warnings.warn(f"chat template does not compile ({problem}); using the built-in BitNet template",
                              stacklevel=3)
                self._trusted = True
            else:
                self._worker = TemplateWorker(WORKER_BASE_MEMORY + 16 * max_message_bytes)

    def render(self, messages: Sequence[Mapping[str, str]], *, bos_token: str = "", eos_token: str = "",
               add_generation_prompt: bool = True, max_chars: int = chat.MAX_RENDERED_CHARS) -> str:
        """As chat.render_chat, but a model template that overruns is stopped by the wall."""
        checked, limit = chat.prepare_messages(messages, max_chars)
        context = {"bos_token": bos_token, "eos_token": eos_token, "add_generation_prompt": add_generation_prompt}
        if not self._trusted:
            outcome, value = self._worker.render(
                {"template": self.source, "messages": checked, "limit": limit, "context": context})
            if outcome == "text":
                return value
            if outcome == "limit":
                raise ChatTemplateLimitError(value)
            chat.warn_fallback(value)
        return chat.render_chat(checked, None, max_chars=max_chars, **context)

    def warm_up(self) -> None:
        """Start the worker process in the background, so the first chat does not wait for it."""
        if self._worker is not None:
            threading.Thread(target=self._start_quietly, name="chat-template-worker", daemon=True).start()

    def _start_quietly(self) -> None:
        try:
            self._worker.start()
        except ChatTemplateLimitError:
            pass  # the first render tries again and reports it

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


def _limit_resources(memory_bytes: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _arm_cpu_limit(seconds: float = RENDER_DEADLINE_S) -> None:
    """SIGXCPU (which ends the process) once this task has used `seconds` + 1 s of CPU."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds + 1)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or soft <= hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _serve(memory_bytes: int) -> None:
    _limit_resources(memory_bytes)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"ready\n")
    stdout.flush()
    for line in stdin:
        try:
            request = json.loads(line)
            if "compile" in request:
                _arm_cpu_limit(START_TIMEOUT_S)
                problem = chat.check_template(request["compile"])
                stdout.write((json.dumps(("text", "") if problem is None else ("failed", problem)) + "\n").encode())
                stdout.flush()
                continue
            _arm_cpu_limit()
            reply = chat.render_untrusted(request["template"], request["messages"], request["limit"],
                                          request["context"])
        except MemoryError:
            reply = ("limit", "chat template needs more memory than a prompt may; refusing it")
        except Exception as e:  # noqa: BLE001 (a bad request line: answer, do not die)
            reply = ("failed", f"{type(e).__name__}")
        stdout.write((json.dumps(reply) + "\n").encode("ascii"))
        stdout.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
