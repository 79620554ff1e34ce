"""A tiny tokenizer in the Hugging Face hub layout of microsoft/bitnet-b1.58-2B-4T.

2B-4T ships Llama-3's tokenizer: byte-level BPE over the Llama-3 split regex, special tokens
appended after the BPE vocab, a post-processor that prepends <|begin_of_text|>, eos
<|eot_id|> in tokenizer_config.json and a "Role: content<|eot_id|>" chat template. This
module trains a small tokenizer of the same shape on an embedded text (deterministic, offline,
well under a second) so tests can build checkpoints without the 128k-token original.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The chat_template of microsoft/bitnet-b1.58-2B-4T's tokenizer_config.json.
BITNET_2B4T_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

# Appended after the BPE vocab in Llama-3's order (128000.. in the real vocab).
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
]
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|eot_id|>"

TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. It's a sentence that we've all seen; they'll
see it again, and I'd say you're tired of it, but I'm not. Don't worry: it won't last.
BitNet b1.58 uses ternary weights {-1, 0, +1} and 8-bit activations. Each weight takes
about 1.58 bits, because log2(3) = 1.5849625. In 2024 and 2025, models with 2 billion
parameters were trained on 4 trillion tokens: 4,000,000,000,000 of them!
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 12345 3.14159 2.71828 -17 +23 1e-5 0x1F.
Dates like 2025-04-16, times like 12:30:45, prices like $19.99 or 5 EUR, and 50% off.

def rms_norm(x, weight, eps=1e-6):
    variance = (x * x).mean(-1, keepdim=True)
    return x / (variance + eps) ** 0.5 * weight

for (int i = 0; i < n; ++i) {
    acc += (int32_t)a[i] * (int32_t)b[i];   // exact integer dot product
}
if x != None and y >= 0: print(f"x={x}, y={y}")  # comment
<html><body class="main">Hello &amp; welcome</body></html>
{"role": "user", "content": "Hello!"} [1, 2, 3] (a, b) -> c => d :: e || f && g

Once upon a time, in a small village by the sea, there lived an old fisherman and his
daughter. Every morning they walked down to the harbour, watched the gulls circle above the
boats, and talked about the weather, the tides, and the stories told by travellers.
"Where does the wind come from?" she asked. "From far away," he answered, "from places
we will never see." She laughed; he smiled. The days grew shorter, the nights longer.

Café, naïve, résumé, façade, jalapeño, Zürich, São Paulo, Kraków, Ångström, œuvre.
Straße, Größe, Übung; el niño, la señora; garçon, crème brûlée; smörgåsbord.
Русский текст: привет, как дела? Ελληνικά: καλημέρα κόσμε. עברית: שלום. العربية: مرحبا.
中文：你好，世界！今天天气很好。日本語：こんにちは、世界。한국어: 안녕하세요 세계.
Emoji: 😀 😃 🎉 🚀 ❤️ 👍🏽 🇺🇸 — and symbols: © ® ™ € £ ¥ § ¶ • … ≤ ≥ ≠ ∞ √ π µ.

Tabs\tand\tcolumns\there, trailing spaces   
   leading spaces, multiple    spaces, and blank lines:


Windows line endings\r\nand mixed\r\nlines.
The end. THE END! the end? The End...
"""


def _train() -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def write_test_tokenizer(out_dir, vocab_size: int = 512) -> int:
    """Write tokenizer.json + tokenizer_config.json into out_dir; return the token count.

    vocab_size counts the BPE vocab (256 bytes + merges); the special tokens come after it,
    so the returned total is vocab_size + len(SPECIAL_TOKENS) when the text allows that many
    merges (it does up to ~1500).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _train()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN}:0 $A:0",
                pair=f"{BOS_TOKEN}:0 $A:0 {BOS_TOKEN}:1 $B:1",
                special_tokens=[(BOS_TOKEN, tok.token_to_id(BOS_TOKEN))],
            ),
        ]
    )
    data = json.loads(tok.to_str())
    data["model"]["ignore_merges"] = True  # as in Llama-3's tokenizer.json
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")

    added_decoder = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    config = {
        "added_tokens_decoder": added_decoder,
        "bos_token": BOS_TOKEN,
        "chat_template": BITNET_2B4T_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": EOS_TOKEN,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return tok.get_vocab_size(with_added_tokens=True)


if __name__ == "__main__":
    import sys
    import time

    t0 = time.perf_counter()
    n = write_test_tokenizer(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tok_fixture")
    print(n, f"{time.perf_counter() - t0:.3f}s")
