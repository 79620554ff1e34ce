"""Quantization-aware training of small BitNet b1.58 models (utils/train_tiny_bitnet.py).

Needs torch (the `test` extra); nothing here is imported by `import bitnet`, and the modules
that need torch import it themselves, so the corpus and tokenizer helpers work without it.

    corpus.py     the training text: Jane Austen's novels from Debian's r-cran-janeaustenr
    rdata.py      the reader of the R data files that package ships its text in
    tokenizer.py  a byte-level BPE in microsoft/bitnet-b1.58-2B-4T's tokenizer layout
    model.py      the 2B-4T architecture in PyTorch, every linear layer ternary with STEs
    train.py      the training loop: schedule, checkpoints, held-out evaluation
    export.py     the Hugging Face hub layout of 2B-4T (packed uint8 + weight_scale), then GGUF
"""
