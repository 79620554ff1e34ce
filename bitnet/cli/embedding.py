"""utils/embedding.py: llama-embedding's command line on the Python API (Model.embed).

  embedding.py -m GGUF -p TEXT [--embd-separator SEP] [--embd-normalize 2] [--pooling last]
               [--embd-output-format ""|array|json|json+] [-t N] [-c N]
The prompt is split at the separator (newline by default) into texts embedded together.
Output as llama-embedding prints it: "embedding i: v0 v1 ..." lines, a JSON array of arrays,
or OpenAI's list object ("json+" adds the cosine similarity matrix).
"""

from __future__ import annotations

import json
import sys

from bitnet.cli.common import ArgumentParser, add_flag, default_threads, int_at_least, run_main

OUTPUT_FORMATS = ("", "array", "json", "json+")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="embedding.py", description=__doc__.split("\n\n")[0])
    add_flag(p, "model", required=True, metavar="GGUF", help="embedding model file (qwen3 / gemma3 BitNet)")
    add_flag(p, "prompt", required=True, metavar="TEXT", help="text(s) to embed, split at --embd-separator")
    add_flag(p, "threads", type=int_at_least(1, 1024), default=None, metavar="N", help="threads (default: all cores)")
    add_flag(p, "ctx_size", type=int_at_least(1), default=2048, metavar="N", help="most tokens per text")
    p.add_argument("--embd-normalize", type=int, default=2, metavar="P",
                   help="-1 none, 0 max-abs (int16 range), 1 taxicab, 2 euclidean (default), >2 p-norm")
    p.add_argument("--embd-output-format", choices=OUTPUT_FORMATS, default="", metavar="FMT",
                   help="'' (text lines), array, json (OpenAI's list), json+ (json with cosine similarities)")
    p.add_argument("--embd-separator", default="\n", metavar="SEP", help="separator between texts (default newline)")
    p.add_argument("--pooling", choices=("mean", "cls", "last"), default=None,
                   help="override the model's pooling (default: the file's pooling_type, else last token)")
    return p


def _print(vectors, fmt: str) -> None:
    rows = [[float(v) for v in row] for row in vectors]
    if fmt == "":
        for i, row in enumerate(rows):
            print(f"embedding {i}: " + " ".join(f"{v:9.6f}" for v in row))
    elif fmt == "array":
        print(json.dumps(rows))
    else:
        data = [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)]
        out = {"object": "list", "data": data}
        if fmt == "json+":
            out["cosineSimilarity"] = (vectors @ vectors.T).tolist()
        print(json.dumps(out))


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    def body() -> int:
        from bitnet.model import Model

        texts = [t for t in args.prompt.split(args.embd_separator)] if args.embd_separator else [args.prompt]
        with Model(args.model, n_threads=args.threads or default_threads(), n_ctx=args.ctx_size) as m:
            vectors = m.embed(texts, normalize=args.embd_normalize, pooling=args.pooling)
        _print(vectors, args.embd_output_format)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
