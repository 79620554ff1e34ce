"""e2e_benchmark's --device cuda: the same pp / tg tests (bitnet.bench.measure) on the GPU backend.
Each decode returns its logits to the host, which waits for the GPU: the timings are complete."""

from __future__ import annotations

from bitnet.bench import Config, Timings, measure, peak_rss_mb


class GpuTimer:
    def __init__(self, path: str, device: str, native):
        import torch

        from bitnet.gpu.forward import GpuModel

        self.model = GpuModel(path, device, native=native)
        dev = self.model.device
        self.device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "triton-interpreter (CPU)"

    def time(self, cfg: Config) -> Timings:
        ctx = self.model.new_context(cfg.n_ctx)
        try:
            pp, tg = measure(ctx.decode, lambda: ctx.truncate(0), self.model.n_vocab, cfg)
        finally:
            ctx.close()
        return Timings(pp, tg, peak_rss_mb())
