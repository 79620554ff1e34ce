"""The OpenAI-compatible HTTP server (FastAPI + uvicorn) on the engine, with continuous batching.

    python -m bitnet.server -m model.gguf --parallel 4      # or run_inference_server.py

Layout: settings.py (what a server is asked to be), schemas.py (request bodies), routes.py
(endpoints), scheduler.py + slots.py + jobs.py (the engine thread, its sequences, the requests
travelling to it), sse.py (streams), auth.py and limits.py (API keys, body cap), metrics.py
(Prometheus), errors.py (OpenAI-shaped errors), app.py (assembly), cli.py (the script),
benchmark.py (concurrent streaming clients, for utils/server_benchmark.py and the soak test),
webui/ (the chat page at /), ray_serve.py (--ray: replicas on Ray Serve) and ray_benchmark.py.
Needs the `server` extra: pip install "bitnet[server]".
"""

from bitnet.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name):
    # create_app pulls in FastAPI; keep `import bitnet.server` light for the CLI's --help.
    if name == "create_app":
        from bitnet.server.app import create_app

        return create_app
    raise AttributeError(f"module 'bitnet.server' has no attribute {name!r}")
