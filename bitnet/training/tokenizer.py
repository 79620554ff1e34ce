"""A byte-level BPE trained on the training text, in microsoft/bitnet-b1.58-2B-4T's layout.

2B-4T ships Llama-3's tokenizer, and so does this one, only smaller: GPT-2 byte-level BPE over
Llama-3's split regex (`ignore_merges`, no normalizer), Llama-3's first special tokens appended
after the BPE vocab (<|begin_of_text|> ... <|eot_id|>), a post-processor that prepends
<|begin_of_text|>, eos <|eot_id|> and 2B-4T's chat template in tokenizer_config.json: the shape
our converter (bitnet/convert/tokenizer_meta.py) and transformers both read. HF `tokenizers`'
BPE trainer is deterministic for a given text and vocab size.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from bitnet.convert.synthetic_vocab import BITNET_2B4T_CHAT_TEMPLATE, BOS, EOS, EOT, LLAMA3_FIRST_SPECIALS
from bitnet.tokenizer import LLAMA3_SPLIT_REGEX

SPECIAL_TOKENS = LLAMA3_FIRST_SPECIALS  # ids n_bpe .. n_bpe + 9, in Llama-3's order


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """BPE of vocab_size tokens in all (BPE vocab + the special tokens after it)."""
    n_bpe = vocab_size - len(SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_bpe, min_frequency=2, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() != n_bpe:
        raise ValueError(f"the text allows only {tok.get_vocab_size()} BPE tokens, {n_bpe} asked: lower vocab_size")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
                                      special_tokens=[(BOS, tok.token_to_id(BOS))]),
    ])  # fmt: skip
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    """tokenizer.json + tokenizer_config.json, as the 2B-4T hub repository has them."""
    data = json.loads(tok.to_str())
    data["model"]["ignore_merges"] = True  # as Llama-3's tokenizer.json says it
    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": True} for t in SPECIAL_TOKENS}  # fmt: skip
    config = {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "chat_template": BITNET_2B4T_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOT,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def special_ids(tok: Tokenizer) -> dict[str, int]:
    return {"bos": tok.token_to_id(BOS), "eos": tok.token_to_id(EOT), "end_of_text": tok.token_to_id(EOS)}


def encode_book(tok: Tokenizer, text: str) -> list[int]:
    """A novel's token ids, without the BOS the post-processor would add."""
    return tok.encode(text, add_special_tokens=False).ids
