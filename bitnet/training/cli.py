"""`utils/train_tiny_bitnet.py`: train the demo model end to end, text to GGUF.

    text (Austen from Debian, or --text files) -> train / held-out split -> BPE tokenizer
    -> quantization-aware training (resumable: OUT/checkpoint.pt) -> hub-layout checkpoint
    -> GGUF, in EXPORT (default OUT/model)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bitnet.cli.common import ArgumentParser, EXIT_USAGE, float_in, int_at_least, run_main

EPILOG = """\
examples:
  python utils/train_tiny_bitnet.py --compile --export models/bitnet-b1.58-austen-5M   # the shipped model
  python utils/train_tiny_bitnet.py --text book.txt --steps 200 --out /tmp/run         # any text

Interrupted runs resume from OUT/checkpoint.pt with the same flags (--no-resume starts over).
The Austen text comes from the r-cran-janeaustenr Debian package: installed, given with --deb,
or fetched with `apt-get download` (no root needed).
exit status: 0 ok, 1 failure, 2 bad flags, 130 Ctrl+C."""

DEFAULT_OUT = Path("build/train-tiny-bitnet")


def build_parser() -> ArgumentParser:
    from bitnet.training.model import TinyConfig
    from bitnet.training.train import TrainConfig

    mc, tc = TinyConfig(vocab_size=4096), TrainConfig()
    p = ArgumentParser(prog="train_tiny_bitnet.py", epilog=EPILOG,
                       description="Quantization-aware training of a small BitNet b1.58 model (2B-4T's "
                                   "architecture) on the CPU, exported as a Hugging Face checkpoint and a GGUF.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="work directory: checkpoint, log (default: %(default)s)")
    p.add_argument("--export", type=Path, default=None, help="where the checkpoint + GGUF go (default: OUT/model)")
    p.add_argument("--text", type=Path, nargs="+", default=None, help="train on these UTF-8 files instead of Austen")
    p.add_argument("--deb", type=Path, default=None, help="a downloaded r-cran-janeaustenr .deb to read the text from")
    p.add_argument("--heldout-fraction", type=float_in(0.0, 0.5, lo_open=True), default=0.01,
                   help="share of every text held out, its last paragraphs (default: %(default)s)")
    m = p.add_argument_group("model (2B-4T: 2560 / 6912 / 30 / 20 / 5; sizes multiples of 128)")
    m.add_argument("--vocab-size", type=int_at_least(300), default=mc.vocab_size)
    m.add_argument("--hidden-size", type=int_at_least(128), default=256)
    m.add_argument("--intermediate-size", type=int_at_least(128), default=640)
    m.add_argument("--layers", type=int_at_least(1), default=6)
    m.add_argument("--heads", type=int_at_least(1), default=mc.num_attention_heads)
    m.add_argument("--kv-heads", type=int_at_least(1), default=mc.num_key_value_heads)
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int_at_least(1), default=tc.steps)
    t.add_argument("--batch-size", type=int_at_least(1), default=tc.batch_size)
    t.add_argument("--seq-len", type=int_at_least(8), default=tc.seq_len)
    t.add_argument("--lr", type=float_in(0.0, lo_open=True), default=tc.lr, help="peak learning rate")
    t.add_argument("--warmup-steps", type=int_at_least(0), default=tc.warmup_steps)
    t.add_argument("--eval-every", type=int_at_least(1), default=tc.eval_every)
    t.add_argument("--seed", type=int_at_least(0), default=tc.seed)
    t.add_argument("-t", "--threads", type=int_at_least(1), default=1, help="torch threads (default: 1)")
    t.add_argument("--compile", action="store_true", help="torch.compile the step (~1.5x faster after ~1 min)")
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    t.add_argument("--export-only", action="store_true", help="export OUT's checkpoint as it is, no more training")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def load_texts(args) -> tuple[list[str], str, str]:
    """(training texts, held-out text, where they came from)."""
    from bitnet.training import corpus

    if args.text:
        books = {str(f): corpus.paragraphs(f.read_text(encoding="utf-8").splitlines()) for f in args.text}
        source = ", ".join(str(f) for f in args.text)
    else:
        books, source = corpus.load_books(corpus.find_data(args.deb)), corpus.LICENCE
    train, heldout = corpus.split_books(books, args.heldout_fraction)
    return train, heldout, source


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch

    from bitnet.training import corpus, export, tokenizer
    from bitnet.training.model import TinyConfig
    from bitnet.training.train import Trainer, TrainConfig

    torch.set_num_threads(args.threads)
    try:
        model_cfg = TinyConfig(vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                               intermediate_size=args.intermediate_size, num_hidden_layers=args.layers,
                               num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                               max_position_embeddings=max(512, args.seq_len))  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                      warmup_steps=min(args.warmup_steps, args.steps // 2), seed=args.seed,
                      eval_every=args.eval_every, checkpoint_every=args.eval_every)  # fmt: skip
    train_texts, heldout, source = load_texts(args)
    tok = tokenizer.train_tokenizer(train_texts, args.vocab_size)
    ids = tokenizer.special_ids(tok)
    stream = []
    for text in train_texts:  # the novels one after another, each closed by <|end_of_text|>
        stream += tokenizer.encode_book(tok, text) + [ids["end_of_text"]]
    heldout_ids = [ids["bos"], *tokenizer.encode_book(tok, heldout)]
    trainer = Trainer(args.out, model_cfg, cfg, np.asarray(stream), heldout_ids, ids["bos"],
                      resume=not args.no_resume, compile=args.compile)  # fmt: skip
    n = trainer.model.n_params()
    print(f"model: {n['total']:,} parameters ({n['ternary']:,} ternary); {len(stream):,} training tokens, "
          f"{len(heldout_ids):,} held-out; {cfg.steps} steps of {cfg.batch_size}x{cfg.seq_len}", file=sys.stderr)
    if args.export_only:
        if trainer.step == 0:
            raise FileNotFoundError(f"no checkpoint in {args.out} to export (or it was written with other flags)")
        last = trainer.log[-1] if trainer.log else {}
    else:
        last = trainer.run(progress=not args.no_progress)
    summary = {"source": source, "train_text_sha256": corpus.text_sha256(train_texts), "params": n,
               "train_tokens": len(stream), "heldout_tokens": len(heldout_ids), "model": model_cfg.to_dict(),
               "training": {**cfg.__dict__, "threads": args.threads, "compile": args.compile},
               "final": last}  # fmt: skip
    dest = export.export_checkpoint(trainer.model, tok, args.export or args.out / "model",
                                    {"heldout.txt": heldout, "training.json": json.dumps(summary, indent=1) + "\n"})
    gguf = export.export_gguf(dest)
    print(f"final: train loss {last.get('loss', float('nan')):.4f}, held-out loss "
          f"{last.get('heldout_loss') or float('nan'):.4f}; wrote {dest} and {gguf}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: run(argv))
