"""The transformer on one torch device: GpuModel (weights) and GpuContext (one sequence's KV cache),
mirroring src/forward.cpp step for step. Ternary linears and the head are Triton kernels
(kernels.py); norms, RoPE, attention and the FFN activation are torch ops in f32 (RMSNorm's sum
of squares in f64, as the engine), with TF32 off so that f32 matmuls stay f32.

GpuContext has NativeContext's interface (decode, truncate, n_past, n_ctx, close), so bitnet.Model
and the generation loop drive either one.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from bitnet.errors import BitnetError
from bitnet.gpu import kernels
from bitnet.gpu.device import resolve_device
from bitnet.gpu.hparams import HParams, read_hparams
from bitnet.gpu.weights import GGML_BF16, dense_values, float_values, ternary_host

MAX_BATCH = 512  # tokens per forward pass (the engine's kMaxBatch)
LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


GROUPS = (("attn_q", "attn_k", "attn_v"), ("ffn_gate", "ffn_up"))  # linears that read one input


@dataclass
class Linear:
    codes: torch.Tensor  # uint8 [n_out, n_in / 4], I2_S rows
    row_scales: torch.Tensor  # f32 [n_out]: the tensor's scale on each of its rows
    block_scales: torch.Tensor | None  # f32 [n_out, n_in / 256] (TQ with per-block scales), or None
    n_in: int
    n_out: int
    input_norm: torch.Tensor | None  # Falcon-E
    splits: tuple[int, ...] = ()  # a stack of several layers: their output widths


def stack(linears: list[Linear]) -> Linear | None:
    """Layers reading the same input as one matrix (one launch; per-row scales keep each layer's
    bits), or None where they cannot be (per-block scales, or per-layer input norms)."""
    if any(w.block_scales is not None or w.input_norm is not None for w in linears):
        return None
    return Linear(torch.cat([w.codes for w in linears]), torch.cat([w.row_scales for w in linears]), None,
                  linears[0].n_in, sum(w.n_out for w in linears), None, tuple(w.n_out for w in linears))


def _f32(x: float) -> float:
    return float(np.float32(x))


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """w * (x / sqrt(mean(x^2) + eps)) per row; the sum of squares in f64, as the engine."""
    mean = (x.double().square().sum(-1, keepdim=True) / x.shape[-1]).float()
    inv = 1.0 / torch.sqrt(mean + eps)
    return w * (x * inv)


class GpuModel:
    """A GGUF model's weights on one device (ternary layers 2 bits a weight)."""

    def __init__(self, path, device: str | torch.device | None = None, native=None):
        from bitnet.convert.gguf_reader import read_gguf
        from bitnet.engine import NativeModel

        self.device = resolve_device(device)
        own_native = native is None
        native = native or NativeModel(path)  # the hardened loader validates the file first
        try:
            arm64 = "ARM layout" in native.desc
            self.desc = native.desc
        finally:
            if own_native:
                native.close()
        f = read_gguf(path)
        t = f.tensors
        embd = t["token_embd.weight"]
        self.hp = hp = read_hparams(f.kv, t.keys(), int(embd.ne[1]))
        self.n_vocab = hp.n_vocab
        self.token_embd = self._dense(embd)
        self.output = self._dense(t["output.weight"]) if "output.weight" in t else self.token_embd
        self.output_norm = self._vector(t["output_norm.weight"])
        self.layers = []
        q_dim, kv_dim = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
        widths = {"attn_q": (hp.n_embd, q_dim), "attn_k": (hp.n_embd, kv_dim), "attn_v": (hp.n_embd, kv_dim),
                  "attn_output": (q_dim, hp.n_embd), "ffn_gate": (hp.n_embd, hp.n_ff), "ffn_up": (hp.n_embd, hp.n_ff),
                  "ffn_down": (hp.n_ff, hp.n_embd)}
        for il in range(hp.n_layer):
            p = f"blk.{il}."
            layer = {"attn_norm": self._vector(t[p + "attn_norm.weight"]),
                     "ffn_norm": self._vector(t[p + "ffn_norm.weight"])}
            for name in LINEARS:
                extra = t.get(p + name + ".scale")
                w = t[p + name + ".weight"]
                n_in, n_out = widths[name]
                host = ternary_host(w.ggml_type, w.data, n_in, n_out, arm64,
                                    float(float_values(extra.ggml_type, extra.data, 1)[0]) if extra else None)
                norm = t.get(p + name + ".input_norm.weight") if hp.has_linear_norms else None
                layer[name] = Linear(self._put(host.codes),
                                     torch.full((n_out,), host.scale, dtype=torch.float32, device=self.device),
                                     self._put(host.block_scales) if host.block_scales is not None else None,
                                     n_in, n_out, self._vector(norm) if norm is not None else None)
            for group in GROUPS:
                fused = stack([layer[name] for name in group])
                if fused is not None:
                    layer["+".join(group)] = fused
                    for name in group:
                        del layer[name]
            if hp.has_sub_norms:
                layer["attn_sub_norm"] = self._vector(t[p + "attn_sub_norm.weight"])
                layer["ffn_sub_norm"] = self._vector(t[p + "ffn_sub_norm.weight"])
            self.layers.append(layer)
        self.rms_eps = _f32(hp.rms_eps)
        self.linear_norm_eps = _f32(hp.linear_norm_eps)

    def _put(self, a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a)
        return torch.from_numpy(a if a.flags.writeable else a.copy()).to(self.device)

    def _vector(self, tensor) -> torch.Tensor:
        return self._put(float_values(tensor.ggml_type, tensor.data, int(np.prod(tensor.ne))))

    def _dense(self, tensor) -> torch.Tensor:
        values = self._put(dense_values(tensor.ggml_type, tensor.data, int(tensor.ne[0]), int(tensor.ne[1])))
        return values.view(torch.bfloat16) if tensor.ggml_type == GGML_BF16 else values

    def new_context(self, n_ctx: int = 0, n_seq: int = 1, kv_dtype: torch.dtype = torch.float32) -> GpuContext:
        return GpuContext(self, n_ctx, n_seq, kv_dtype)

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "triton-interpreter (CPU)"

    def weight_bytes(self) -> int:
        """Bytes of weights on the device (what one decode step streams, KV cache aside)."""
        total = self.token_embd.numel() * self.token_embd.element_size()
        if self.output is not self.token_embd:
            total += self.output.numel() * self.output.element_size()
        for layer in self.layers:
            for v in layer.values():
                if isinstance(v, Linear):
                    total += v.codes.numel() + (v.block_scales.numel() * 4 if v.block_scales is not None else 0)
                    total += v.row_scales.numel() * 4
                else:
                    total += v.numel() * 4
        return total

    def close(self):
        self.layers, self.token_embd, self.output = [], None, None


def rope_tables(hp: HParams, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [n_ctx, head_dim / 2] in f32, computed as the engine does (f32 angle = pos * inv_freq)."""
    half = hp.head_dim // 2
    exponent = np.arange(0, 2 * half, 2, dtype=np.float32) / np.float32(hp.head_dim)
    power = np.power(np.float64(np.float32(hp.rope_theta)), exponent.astype(np.float64)).astype(np.float32)
    inv_freq = np.float32(1) / power
    angle = np.arange(n_ctx, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(angle.astype(np.float64)).astype(np.float32), np.sin(angle.astype(np.float64)).astype(np.float32)


class GpuContext:
    """n_seq sequences (1 by default) advancing in lockstep, each with a contiguous KV cache:
    [n_layer, n_seq, n_ctx, kv_dim] on the model's device, f32 (DESIGN's contract) or f16 (half
    the memory; keys and values rounded to f16 as they are stored). Several sequences make one
    batch of rows for every ternary product (batched decoding); one sequence takes a prompt as one
    batch."""

    _norm = staticmethod(rms_norm)  # batch.py's slots use a row-wise kernel instead

    def __init__(self, model: GpuModel, n_ctx: int = 0, n_seq: int = 1, kv_dtype: torch.dtype = torch.float32):
        hp = model.hp
        self.model = model
        self.n_ctx = int(n_ctx) if n_ctx and n_ctx > 0 else hp.n_ctx_train
        self.n_seq = int(n_seq)
        kv = hp.n_head_kv * hp.head_dim
        dev = model.device
        try:
            shape = (hp.n_layer, self.n_seq, self.n_ctx, kv)
            self.k_cache = torch.zeros(shape, dtype=kv_dtype, device=dev)
            self.v_cache = torch.zeros(shape, dtype=kv_dtype, device=dev)
        except torch.OutOfMemoryError:
            raise BitnetError(f"out of device memory allocating {self.n_seq} x {self.n_ctx} tokens of KV cache") \
                from None
        cos, sin = rope_tables(hp, self.n_ctx)
        self.rope_cos, self.rope_sin = model._put(cos), model._put(sin)
        self._n_past = 0
        # Single-token steps replay CUDA graphs on a GPU (graphs.py); BITNET_CUDA_GRAPHS=0 turns
        # them off, and a capture that fails turns them off with a warning.
        self._graphs = dev.type == "cuda" and os.environ.get("BITNET_CUDA_GRAPHS", "1") != "0"
        self._graphed = None

    @property
    def n_past(self) -> int:
        return self._n_past

    def truncate(self, n_past: int):
        if not 0 <= n_past <= self._n_past:
            raise BitnetError(f"cannot truncate a context of {self._n_past} tokens to {n_past}")
        self._n_past = int(n_past)

    def close(self):
        self.k_cache = self.v_cache = self._graphed = None

    def decode(self, tokens, all_logits: bool = False, want_logits: bool = True) -> np.ndarray | None:
        """Run tokens after the cached ones; logits [n, vocab] (all) or [vocab] (last), numpy f32.
        tokens: 1-D (one sequence), or [n_seq, n] (logits then [n_seq, n, vocab] or [n_seq, vocab])."""
        out = self.decode_tensor(tokens, all_logits, want_logits)
        return None if out is None else out.cpu().numpy()

    def decode_tensor(self, tokens, all_logits: bool = False, want_logits: bool = True) -> torch.Tensor | None:
        """decode(), the logits left on the device."""
        ids = np.ascontiguousarray(tokens, dtype=np.int64)
        flat = ids.ndim == 1
        if flat:
            ids = ids[None]
        if ids.ndim != 2 or ids.size == 0 or ids.shape[0] != self.n_seq:
            raise BitnetError(f"decode needs a non-empty list of token ids ({self.n_seq} rows of them "
                              "for a context of several sequences)")
        n, vocab = ids.shape[1], self.model.n_vocab
        if self._n_past + n > self.n_ctx:
            raise BitnetError(f"context is full: {self._n_past} cached + {n} new tokens > n_ctx {self.n_ctx}")
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.size:
            raise BitnetError(f"token id {int(bad[0])} is out of range [0, {vocab})")
        if n == 1 and self._graphs:
            logits = self._graph_step(ids[:, 0])
            if logits is not None:
                out = logits.clone()[:, None] if all_logits else logits.clone()
                return None if not want_logits else (out[0] if flat else out)
        outs = []
        step = max(1, MAX_BATCH // self.n_seq)
        with torch.no_grad():
            for done in range(0, n, step):
                chunk = torch.from_numpy(ids[:, done : done + step]).to(self.model.device)
                last = done + step >= n
                head_rows = "all" if all_logits else ("last" if last and want_logits else "none")
                logits = self._forward(chunk, head_rows)
                if logits is not None:
                    outs.append(logits)
        if not want_logits:
            return None
        out = torch.cat(outs, dim=1) if all_logits else outs[-1][:, -1]
        return out[0] if flat else out

    def _graph_step(self, ids: np.ndarray) -> torch.Tensor | None:
        """One token per sequence through a CUDA graph; None (graphs then off) if capture fails."""
        from bitnet.gpu.graphs import GraphedDecoder

        try:
            if self._graphed is None:
                self._graphed = GraphedDecoder(self)
            with torch.no_grad():
                return self._graphed.step(torch.from_numpy(ids).to(self.model.device))
        except BitnetError:
            raise
        except Exception as exc:  # e.g. an operation that cannot be captured: run eagerly instead
            warnings.warn(f"bitnet.gpu: CUDA graphs off ({type(exc).__name__}: {exc})", stacklevel=3)
            self._graphs, self._graphed = False, None
            return None

    # ---- the forward pass (src/forward.cpp) --------------------------------------------------------
    def _forward(self, ids: torch.Tensor, head_rows: str) -> torch.Tensor | None:
        """ids [n_seq, m] at positions n_past .. n_past + m - 1; logits [n_seq, m or 1, vocab]."""
        md = self.model
        n_seq, m = ids.shape
        p0 = self._n_past
        x = md.token_embd[ids.reshape(-1)].float()  # rows: sequence-major
        for il, layer in enumerate(md.layers):
            x = x + self._attention(layer, il, self._norm(x, layer["attn_norm"], md.rms_eps), n_seq, p0)
            x = x + self._ffn(layer, self._norm(x, layer["ffn_norm"], md.rms_eps))
        self._n_past = p0 + m
        if head_rows == "none":
            return None
        rows = x.view(n_seq, m, -1)
        rows = rows if head_rows == "all" else rows[:, -1:]
        n_rows = rows.shape[1]
        logits = kernels.dense_matmul(self._norm(rows.reshape(n_seq * n_rows, -1), md.output_norm, md.rms_eps),
                                      md.output)
        return logits.view(n_seq, n_rows, -1)

    # ---- one decode step with static shapes (capturable in a CUDA graph; see graphs.py) -------------
    def forward_step_static(self, ids: torch.Tensor, pos: torch.Tensor, n_keys: int | None = None) -> torch.Tensor:
        """One token per sequence (ids [n_seq]) at the position held in the 0-d device tensor pos;
        logits [n_seq, vocab]. Every shape is fixed: attention runs over the first n_keys cache
        positions (default all) with those after pos masked, so the step can be replayed as a CUDA
        graph for any pos < n_keys. The caller advances n_past. (The cache must hold no NaN past
        pos: it is zeroed at creation.)"""
        md, hp = self.model, self.model.hp
        n_seq, hd, n_kv = ids.shape[0], hp.head_dim, hp.n_head_kv
        group = hp.n_head // n_kv
        at = pos.view(1)
        cos, sin = self.rope_cos.index_select(0, at), self.rope_sin.index_select(0, at)  # [1, half]
        n_keys = self.n_ctx if n_keys is None else n_keys
        masked = torch.arange(n_keys, device=ids.device) > pos
        scale = float(np.float32(1) / np.sqrt(np.float32(hd)))
        x = md.token_embd[ids].float()
        for il, layer in enumerate(md.layers):
            q, k, v = self._linears(self._norm(x, layer["attn_norm"], md.rms_eps), layer, GROUPS[0])
            q = self._rope_at(q.view(n_seq, hp.n_head, hd), cos, sin)
            k = self._rope_at(k.view(n_seq, n_kv, hd), cos, sin)
            self.k_cache[il].index_copy_(1, at, k.reshape(n_seq, 1, n_kv * hd).to(self.k_cache.dtype))
            self.v_cache[il].index_copy_(1, at, v.reshape(n_seq, 1, n_kv * hd).to(self.v_cache.dtype))
            keys = self.k_cache[il, :, :n_keys].float().view(n_seq, n_keys, n_kv, hd).permute(0, 2, 3, 1)
            values = self.v_cache[il, :, :n_keys].float().view(n_seq, n_keys, n_kv, hd).permute(0, 2, 1, 3)
            scores = torch.matmul(q.view(n_seq, n_kv, group, hd), keys) * scale  # [S, kv, group, n]
            scores = scores.masked_fill(masked, float("-inf"))
            e = torch.exp(scores - scores.amax(-1, keepdim=True))
            att = torch.matmul(e / e.sum(-1, keepdim=True), values).reshape(n_seq, hp.n_head * hd)
            if hp.has_sub_norms:
                att = self._norm(att, layer["attn_sub_norm"], md.rms_eps)
            x = x + self._linears(att, layer, ("attn_output",))[0]
            x = x + self._ffn(layer, self._norm(x, layer["ffn_norm"], md.rms_eps))
        return kernels.dense_matmul(self._norm(x, md.output_norm, md.rms_eps), md.output)

    def _rope_at(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [n_seq, heads, head_dim] rotated by one position's cos, sin [1, half]."""
        half = x.shape[2] // 2
        if self.model.hp.rope == "neox":
            a, b = x[..., :half], x[..., half:]
            return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
        pairs = x.reshape(*x.shape[:2], half, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).reshape(x.shape)

    def _linears(self, x: torch.Tensor, layer: dict, names: tuple[str, ...]) -> list[torch.Tensor]:
        """Ternary linears reading the same input x: quantized once (or once each, with input
        norms), multiplied as one stacked matrix where the loader could stack them."""
        md = self.model
        fused = layer.get("+".join(names)) if len(names) > 1 else None
        if fused is not None:
            q, s = kernels.quantize_rows(x)
            y = kernels.ternary_int_matmul(q, s, fused.codes, fused.n_out, fused.n_in, fused.row_scales)
            return list(torch.split(y, fused.splits, dim=1))
        outs, quantized = [], None
        for w in (layer[name] for name in names):
            if w.input_norm is not None:
                q, s = kernels.quantize_rows(self._norm(x, w.input_norm, md.linear_norm_eps))
            else:
                q, s = quantized = quantized or kernels.quantize_rows(x)
            outs.append(kernels.ternary_int_matmul(q, s, w.codes, w.n_out, w.n_in, w.row_scales, w.block_scales))
        return outs

    def _rope(self, x: torch.Tensor, p0: int) -> torch.Tensor:
        """x [n_seq, m, heads, head_dim] at positions p0 .. p0 + m - 1."""
        m, half = x.shape[1], x.shape[3] // 2
        cos = self.rope_cos[p0 : p0 + m].unsqueeze(1)  # [m, 1, half]
        sin = self.rope_sin[p0 : p0 + m].unsqueeze(1)
        if self.model.hp.rope == "neox":  # pairs (j, j + half)
            a, b = x[..., :half], x[..., half:]
            return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
        pairs = x.reshape(*x.shape[:3], half, 2)  # "normal": pairs (2j, 2j + 1)
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).reshape(x.shape)

    def _attention(self, layer: dict, il: int, h: torch.Tensor, n_seq: int, p0: int) -> torch.Tensor:
        """Causal grouped-query attention of each sequence's m new rows against its cache."""
        hp = self.model.hp
        m, hd, n_kv = h.shape[0] // n_seq, hp.head_dim, hp.n_head_kv
        group = hp.n_head // n_kv
        q, k, v = self._linears(h, layer, GROUPS[0])
        q = self._rope(q.view(n_seq, m, hp.n_head, hd), p0)
        k = self._rope(k.view(n_seq, m, n_kv, hd), p0)
        self.k_cache[il, :, p0 : p0 + m] = k.reshape(n_seq, m, n_kv * hd)
        self.v_cache[il, :, p0 : p0 + m] = v.view(n_seq, m, n_kv * hd)
        n_keys = p0 + m
        keys = self.k_cache[il, :, :n_keys].float().view(n_seq, n_keys, n_kv, hd).permute(0, 2, 3, 1)  # [S, kv, hd, n]
        values = self.v_cache[il, :, :n_keys].float().view(n_seq, n_keys, n_kv, hd).permute(0, 2, 1, 3)
        qg = q.view(n_seq, m, n_kv, group, hd).permute(0, 2, 3, 1, 4)  # [S, kv, group, m, hd]
        scale = float(np.float32(1) / np.sqrt(np.float32(hd)))
        scores = torch.matmul(qg, keys.unsqueeze(2)) * scale  # [S, kv, group, m, n]
        if m > 1:  # causal: row i sees keys up to p0 + i
            pos = torch.arange(n_keys, device=h.device)
            masked = pos[None, :] > (p0 + torch.arange(m, device=h.device))[:, None]
            scores = scores.masked_fill(masked, float("-inf"))
        e = torch.exp(scores - scores.amax(-1, keepdim=True))
        probs = e / e.sum(-1, keepdim=True)
        att = torch.matmul(probs, values.unsqueeze(2))  # [S, kv, group, m, hd]
        att = att.permute(0, 3, 1, 2, 4).reshape(n_seq * m, hp.n_head * hd)
        if hp.has_sub_norms:
            att = self._norm(att, layer["attn_sub_norm"], self.model.rms_eps)
        return self._linears(att, layer, ("attn_output",))[0]

    def _ffn(self, layer: dict, h: torch.Tensor) -> torch.Tensor:
        hp = self.model.hp
        g, u = self._linears(h, layer, GROUPS[1])
        if hp.act == "relu2":
            r = torch.clamp_min(g, 0.0)
            a = r * r * u
        else:
            a = g / (1.0 + torch.exp(-g)) * u
        if hp.has_sub_norms:
            a = self._norm(a, layer["ffn_sub_norm"], self.model.rms_eps)
        return self._linears(a, layer, ("ffn_down",))[0]
