#!/usr/bin/env python3
"""Time to first token of a chat's 5th turn through the server, with the slot's prompt cache
reused (the conversation so far is in the slot) and without (another prompt went through the
slot just before, so the whole history is computed again). Rounds alternate the two cases.

  python utils/prompt_cache_bench.py /tmp/2b4t/dummy-bitnet-2B-4T.i2_s.gguf -t 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = ["Tell me about the weather in the north of the country in winter, please.",
             "And what should I pack for a week of walking in the hills there?",
             "Which towns along the way have a good place to stay for the night?",
             "How long does the walk take from the first town to the last one?",
             "Thank you. Could you sum it all up in a few short lines for me now?"]  # fmt: skip


@contextlib.contextmanager
def serve(model: str, threads: int, n_ctx: int):
    import uvicorn

    from bitnet.server.app import create_app
    from bitnet.server.cli import bind_socket
    from bitnet.server.settings import ServerSettings

    app = create_app(ServerSettings(model_path=model, n_threads=threads, n_ctx=n_ctx, n_parallel=1))
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while app.state.scheduler.state != "ready":
        if app.state.scheduler.state == "failed":
            raise SystemExit(f"error: {app.state.scheduler.error}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def first_token_s(client, messages: list[dict], max_tokens: int = 4) -> tuple[float, int, int]:
    """Seconds to the first content chunk; prompt and cached tokens from the usage chunk."""
    t0 = time.perf_counter()
    ttft, usage = None, None
    stream = client.chat.completions.create(model="m", messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - t0
        if chunk.usage is not None:
            usage = chunk.usage
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return ttft if ttft is not None else time.perf_counter() - t0, usage.prompt_tokens, cached


def main() -> None:
    import openai

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--reply-tokens", type=int, default=48, help="tokens of each earlier assistant reply")
    args = ap.parse_args()
    with serve(args.model, args.threads, 2048) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        messages: list[dict] = []
        for q in QUESTIONS[:4]:  # the first four turns, with the model's own replies
            messages.append({"role": "user", "content": q})
            r = client.chat.completions.create(model="m", messages=messages, max_tokens=args.reply_tokens,
                                               temperature=0)
            messages.append({"role": "assistant", "content": r.choices[0].message.content})
        turn5 = messages + [{"role": "user", "content": QUESTIONS[4]}]
        times = {"reused": [], "cold": []}
        for _ in range(args.rounds):
            first_token_s(client, messages[:-1], args.reply_tokens)  # the slot holds turn 4 and its reply
            t, n_prompt, cached = first_token_s(client, turn5)
            times["reused"].append(t)
            reused_cached = cached
            client.completions.create(model="m", prompt="Something else entirely.", max_tokens=1)  # evicts the chat
            t, _, cached = first_token_s(client, turn5)
            times["cold"].append(t)
            assert cached <= 1, cached
        print(f"5th turn: {n_prompt} prompt tokens, {reused_cached} of them cached when reused")
        for name, values in times.items():
            print(f"  time to first token, {name:6s}: median {1e3 * statistics.median(values):8.1f} ms "
                  f"({', '.join(f'{1e3 * v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
