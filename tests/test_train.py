"""The training pipeline (bitnet/training, utils/train_tiny_bitnet.py) on tiny configurations:
the quantizers are the engine's and transformers' arithmetic, the loss goes down, runs are
deterministic and resumable, the export computes what training computed, and the Austen text
is read from a Debian package built here the way r-cran-janeaustenr is."""

import gzip
import io
import json
import lzma
import math
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitnet import engine  # noqa: E402
from bitnet.convert.ternary import absmean_ternarize  # noqa: E402
from bitnet.training import corpus, export, tokenizer  # noqa: E402
from bitnet.training.model import TinyConfig, _Int8Activation, _TernaryWeight  # noqa: E402
from bitnet.training.train import Trainer, TrainConfig  # noqa: E402
from tests.hf_models import load_reference  # noqa: E402
from tests.tokenizer_fixture import TRAINING_TEXT  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "utils" / "train_tiny_bitnet.py"
TINY = TinyConfig(vocab_size=320, hidden_size=128, intermediate_size=128, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)  # fmt: skip
TEXT = TRAINING_TEXT * 3


def tiny_trainer(out: Path, steps: int = 6, resume: bool = True) -> Trainer:
    tok = tokenizer.train_tokenizer([TEXT], TINY.vocab_size)
    ids = tokenizer.encode_book(tok, TEXT)
    cfg = TrainConfig(steps=steps, batch_size=4, seq_len=32, warmup_steps=2, eval_every=3, checkpoint_every=3,
                      eval_ctx=32)  # fmt: skip
    return Trainer(out, TINY, cfg, np.asarray(ids), ids[:200], tok.token_to_id("<|begin_of_text|>"), resume=resume)


def test_quantizers_are_the_engines_and_the_converters():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 256)) * rng.uniform(0.01, 30, (16, 1))).astype(np.float32)
    x[3] = 0  # an all-zero row: the 1e-5 floor
    q, s = engine.quantize_activations(x)
    ours = _Int8Activation.apply(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, q.astype(np.float32) / s[:, None])  # codes equal bit for bit
    w = (rng.standard_normal((64, 128)) * 0.05).astype(np.float32)
    codes, scale = absmean_ternarize(w)
    np.testing.assert_array_equal(_TernaryWeight.apply(torch.from_numpy(w)).numpy(), codes.astype(np.float32) * scale)


def test_quantizers_pass_gradients_straight_through():
    x = torch.randn(4, 128, requires_grad=True)
    (_Int8Activation.apply(x) * 3).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    straight = tiny_trainer(tmp_path / "a")
    straight.run(progress=False)
    first = tiny_trainer(tmp_path / "b")
    for _ in range(3):
        first.train_step()
    first.save()
    resumed = tiny_trainer(tmp_path / "b")
    assert resumed.step == 3
    resumed.run(progress=False)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.log[-1]["heldout_loss"] == resumed.log[-1]["heldout_loss"]


def test_export_computes_what_training_computed(tmp_path):
    trainer = tiny_trainer(tmp_path / "run", resume=False)
    trainer.run(progress=False)
    tok = tokenizer.train_tokenizer([TEXT], TINY.vocab_size)
    ckpt = export.export_checkpoint(trainer.model, tok, tmp_path / "hf")
    gguf = export.export_gguf(ckpt)
    ids = tokenizer.encode_book(tok, TEXT)[:48]
    model = trainer.model.eval()
    with torch.no_grad():
        model.embed_tokens.weight.copy_(model.embed_tokens.weight.half().float())  # what the export stores
        trained = model(torch.tensor([ids]))[0].numpy()
        reference = load_reference(ckpt)
        hf = reference(torch.tensor([ids])).logits[0].numpy()
    assert type(reference).__name__ == "BitNetForCausalLM"
    bound = 1e-2 * np.abs(hf).max()  # DESIGN.md section 3
    assert np.abs(trained - hf).max() <= bound
    from bitnet import Model

    with Model(gguf, n_threads=2) as m:
        assert m.tokenize(TEXT[:200]) == tok.encode(TEXT[:200]).ids
        assert np.abs(m.logits(ids) - hf).max() <= bound


def test_script_trains_and_its_loss_decreases(tmp_path):
    text = tmp_path / "austen.txt"
    text.write_text((REPO / "models" / "bitnet-b1.58-austen-5M" / "heldout.txt").read_text(encoding="utf-8"))
    out = tmp_path / "run"
    args = ["--text", text, "--out", out, "--vocab-size", 512, "--hidden-size", 128, "--intermediate-size", 256,
            "--layers", 1, "--heads", 2, "--kv-heads", 1, "--seq-len", 64, "--batch-size", 8, "--steps", 40,
            "--eval-every", 10, "--warmup-steps", 4, "--no-progress"]  # fmt: skip
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    log = json.loads((out / "train_log.json").read_text())
    assert [e["step"] for e in log] == [10, 20, 30, 40]
    assert log[-1]["loss"] < log[0]["loss"] - 0.3 and log[-1]["loss"] < math.log(512) - 0.8, log  # ln(vocab): chance
    assert log[-1]["heldout_loss"] < log[0]["heldout_loss"], log
    model = out / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "heldout.txt",
            export.GGUF_NAME} <= {p.name for p in model.iterdir()}  # fmt: skip
    config = json.loads((model / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                             "quantization_mode": "offline"}  # fmt: skip


def test_script_refuses_bad_sizes_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--hidden-size", "200", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr


# ---- the Austen text: a Debian package made here in r-cran-janeaustenr's layout ----


def _r_char(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">ii", 0x00040009 if s.isascii() else 0x00008009, len(b)) + b


def _r_vector(kind: int, items: list, named: bool = False) -> bytes:
    flags = kind | (0x200 if named else 0)
    if kind == 13:  # INTSXP
        out = struct.pack(">ii", flags, len(items)) + struct.pack(f">{len(items)}i", *items)
    else:  # STRSXP of strings, or VECSXP of serialized items
        out = struct.pack(">ii", flags, len(items)) + b"".join(_r_char(x) if kind == 16 else x for x in items)
    return out


def _r_named_list(d: dict) -> bytes:
    names = struct.pack(">i", 0x402) + struct.pack(">i", 1) + _r_char("names") + _r_vector(16, list(d))
    return _r_vector(19, list(d.values()), named=True) + names + struct.pack(">i", 254)


def _r_serialize(item: bytes) -> bytes:
    return b"X\n" + struct.pack(">iiii", 3, 0x40201, 0x30500, 5) + b"UTF-8" + item


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def make_janeaustenr_deb(path: Path, books: dict[str, list[str]]) -> Path:
    rdb, variables = b"", {}
    for name, lines in books.items():
        raw = _r_serialize(_r_vector(16, lines))
        blob = struct.pack(">I", len(raw)) + zlib.compress(raw)
        variables[name] = _r_vector(13, [len(rdb), len(blob)])
        rdb += blob
    rdx = gzip.compress(_r_serialize(_r_named_list({"variables": _r_named_list(variables),
                                                    "references": _r_vector(19, []),
                                                    "compressed": struct.pack(">iii", 10, 1, 1)})))  # fmt: skip
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, data in (("Rdata.rdx", rdx), ("Rdata.rdb", rdb)):
            info = tarfile.TarInfo(f"./{corpus.PACKAGE_DATA}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": lzma.compress(b""),
                          "data.tar.xz": lzma.compress(tar_bytes.getvalue())}))  # fmt: skip
    return path


def test_austen_text_from_a_debian_package(tmp_path):
    lines = ["EMMA", "", "CHAPTER I", "", "Emma Woodhouse, handsome, clever,", "and rich.  She was",
             "", "", "The end, café."]  # fmt: skip
    books = {b: [f"{b.upper()}", "", *lines] for b in corpus.BOOKS}
    deb = make_janeaustenr_deb(tmp_path / "r-cran-janeaustenr_1.0.0-1_all.deb", books)
    data = corpus.find_data(deb, cache_dir=tmp_path / "cache")
    read = corpus.load_books(data)
    assert list(read) == list(corpus.BOOKS)
    assert read["emma"] == ["EMMA", "EMMA", "CHAPTER I", "Emma Woodhouse, handsome, clever, and rich. She was",
                            "The end, café."]  # fmt: skip
    train, heldout = corpus.split_books(read, 0.1)
    assert train[0].endswith("She was\n") and heldout.startswith("The end, café.")
    assert heldout.count("The end, café.") == len(corpus.BOOKS)


def test_a_file_that_is_not_a_deb_is_refused(tmp_path):
    bad = tmp_path / "x.deb"
    bad.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a Debian package"):
        corpus.find_data(bad, cache_dir=tmp_path / "cache")
