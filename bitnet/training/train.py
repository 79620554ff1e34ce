"""The training loop: BitNet b1.58's published recipe at a small scale, on the CPU.

Recipe (BitNet b1.58 2B4T technical report, and "The Era of 1-bit LLMs: Training Tips, Code
and FAQ"): ternary weights and int8 activations in the forward pass from step one (model.py),
float master weights updated by AdamW (betas 0.9/0.95), and a two-stage schedule:
  stage 1 (first half):  linear warm-up, then cosine decay of a high peak learning rate to half
                         of it; weight decay 0.1 on the matrices, cosine-decayed to 0
  stage 2 (second half): the learning rate drops to `cooldown_lr_ratio` x peak and decays
                         linearly to 0 (the cool-down); no weight decay
Gradients clipped to norm 1. Each step samples `batch_size` windows of `seq_len` + 1 tokens at
random offsets of the token stream, from a generator seeded by (seed, step): the batches do not
depend on what ran before, so a resumed run repeats the uninterrupted one exactly. Each window
starts with BOS (its first token replaced), as inference prompts and perplexity chunks do.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bitnet.perplexity import make_windows, scored_rows
from bitnet.training.model import TinyBitNet, TinyConfig

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    seq_len: int = 512
    lr: float = 3e-3
    cooldown_lr_ratio: float = 0.4
    warmup_steps: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 1
    eval_every: int = 100
    checkpoint_every: int = 100
    eval_ctx: int = 512  # perplexity chunks of the held-out evaluation


def learning_rate(cfg: TrainConfig, step: int) -> float:
    half = cfg.steps // 2
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step < half:
        progress = (step - cfg.warmup_steps) / max(1, half - cfg.warmup_steps)
        return cfg.lr * (0.75 + 0.25 * math.cos(math.pi * progress))  # peak -> peak / 2
    return cfg.lr * cfg.cooldown_lr_ratio * (cfg.steps - step) / max(1, cfg.steps - half)


def weight_decay(cfg: TrainConfig, step: int) -> float:
    half = cfg.steps // 2
    return cfg.weight_decay * 0.5 * (1 + math.cos(math.pi * step / half)) if step < half else 0.0


def batch(tokens: np.ndarray, cfg: TrainConfig, step: int, bos_id: int) -> torch.Tensor:
    rng = np.random.default_rng([cfg.seed, step])
    starts = rng.integers(0, len(tokens) - cfg.seq_len - 1, size=cfg.batch_size)
    x = np.stack([tokens[s : s + cfg.seq_len + 1] for s in starts]).astype(np.int64)
    x[:, 0] = bos_id
    return torch.from_numpy(x)


def heldout_loss(model: TinyBitNet, windows: np.ndarray) -> float:
    """Mean NLL of the held-out perplexity chunks (bitnet/perplexity.py's protocol), in nats."""
    rows = scored_rows(windows.shape[1])
    with torch.no_grad():
        ids = torch.from_numpy(windows.astype(np.int64))
        logits = torch.cat([model(ids[i : i + 8]) for i in range(0, len(ids), 8)])
        nll = F.cross_entropy(logits[:, rows].double().flatten(0, 1), ids[:, rows.start + 1 :].flatten(),
                              reduction="mean")  # fmt: skip
    return float(nll)


def _optimizer(model: TinyBitNet, cfg: TrainConfig) -> torch.optim.AdamW:
    matrices = [p for p in model.parameters() if p.ndim == 2]
    others = [p for p in model.parameters() if p.ndim != 2]  # norms: never decayed
    groups = [{"params": matrices, "decay": True}, {"params": others, "decay": False, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


class Trainer:
    """Owns the model, optimizer and log of one run in out_dir; resumes from its checkpoint."""

    def __init__(self, out_dir: Path, model_cfg: TinyConfig, cfg: TrainConfig, tokens: np.ndarray,
                 heldout_ids: list[int], bos_id: int, resume: bool = True, compile: bool = False):  # fmt: skip
        self.out_dir, self.cfg, self.model_cfg, self.bos_id = Path(out_dir), cfg, model_cfg, bos_id
        self.tokens = np.asarray(tokens, dtype=np.int32)
        if len(self.tokens) <= cfg.seq_len + 1:
            raise ValueError(f"{len(self.tokens)} training tokens: too few for windows of {cfg.seq_len}")
        n_ctx = min(cfg.eval_ctx, len(heldout_ids))
        self.heldout = make_windows(heldout_ids, n_ctx, bos_id) if n_ctx >= 4 else None
        torch.manual_seed(cfg.seed)
        self.model = TinyBitNet(model_cfg)
        self.opt = _optimizer(self.model, cfg)
        self.step, self.log, self.elapsed_s = 0, [], 0.0  # elapsed: training time over all resumes
        ckpt = self.out_dir / CHECKPOINT
        if resume and ckpt.is_file():
            self._load(ckpt)
        self.loss_fn = torch.compile(self._loss) if compile else self._loss

    def _load(self, path: Path) -> None:
        state = torch.load(path, weights_only=True)
        if state["model_cfg"] != self.model_cfg.to_dict() or state["train_cfg"] != asdict(self.cfg):
            raise ValueError(f"{path} was written with other settings; use another --out or --no-resume")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.log, self.elapsed_s = state["step"], state["log"], state["elapsed_s"]

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _save(self.out_dir / CHECKPOINT, {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                                          "step": self.step, "log": self.log, "elapsed_s": self.elapsed_s,
                                          "model_cfg": self.model_cfg.to_dict(), "train_cfg": asdict(self.cfg)})

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())

    def evaluate(self) -> float | None:
        if self.heldout is None:
            return None
        self.model.eval()
        try:
            return heldout_loss(self.model, self.heldout)
        finally:
            self.model.train()

    def train_step(self) -> float:
        lr, wd = learning_rate(self.cfg, self.step), weight_decay(self.cfg, self.step)
        for group in self.opt.param_groups:
            group["lr"], group["weight_decay"] = lr, wd if group["decay"] else 0.0
        loss = self.loss_fn(batch(self.tokens, self.cfg, self.step, self.bos_id))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def run(self, progress: bool = True) -> dict:
        """Train to cfg.steps (from wherever the checkpoint left off); the last log entry."""
        from tqdm import tqdm

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model.train()
        t0, start_s, recent = time.perf_counter(), self.elapsed_s, []
        with tqdm(total=self.cfg.steps, initial=self.step, disable=not progress, unit="step",
                  dynamic_ncols=True) as bar:  # fmt: skip
            while self.step < self.cfg.steps:
                recent = (recent + [self.train_step()])[-20:]
                self.elapsed_s = start_s + time.perf_counter() - t0
                lr = learning_rate(self.cfg, self.step - 1)
                entry = {"step": self.step, "loss": sum(recent) / len(recent), "lr": lr}
                if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps:
                    entry["heldout_loss"] = self.evaluate()
                    entry["elapsed_s"] = round(self.elapsed_s, 1)
                    self.log.append(entry)
                    (self.out_dir / "train_log.json").write_text(json.dumps(self.log, indent=1))
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    self.save()
                bar.set_postfix(loss=f"{entry['loss']:.3f}", heldout=_fmt(self.log[-1].get("heldout_loss")
                                                                          if self.log else None))  # fmt: skip
                bar.update(1)
        return self.log[-1] if self.log else {}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
