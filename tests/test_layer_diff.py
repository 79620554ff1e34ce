"""Layer-by-layer diff: the engine's named intermediate tensors (debug dump) against the same
tensors inside transformers' forward, captured with hooks. When an end-to-end comparison
fails, this is where to look first."""

import numpy as np
import torch

from bitnet import Model
from bitnet.engine import NativeContext
from tests.hf_models import load_reference

# engine name -> (module path in BitNetForCausalLM, capture the module's input or output)
HOOKS = {
    "attn_norm": ("model.layers.{L}.input_layernorm", "out"),
    "q": ("model.layers.{L}.self_attn.q_proj", "out"),
    "v": ("model.layers.{L}.self_attn.v_proj", "out"),
    "attn_sub_norm": ("model.layers.{L}.self_attn.attn_sub_norm", "out"),
    "attn_out": ("model.layers.{L}.self_attn.o_proj", "out"),
    "ffn_norm": ("model.layers.{L}.post_attention_layernorm", "out"),
    "gate": ("model.layers.{L}.mlp.gate_proj", "out"),
    "ffn_sub_norm": ("model.layers.{L}.mlp.ffn_sub_norm", "out"),
    "ffn_out": ("model.layers.{L}.mlp.down_proj", "out"),
}


def capture_reference(ref, ids, layer):
    captured, handles = {}, []
    for name, (path, _) in HOOKS.items():
        module = ref.get_submodule(path.format(L=layer))

        def hook(_mod, _inp, out, name=name):
            captured[name] = out[0].detach().float().numpy()

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        ref(torch.tensor([ids]))
    for h in handles:
        h.remove()
    return captured


def test_every_named_tensor_matches_the_reference(tiny_checkpoint, tiny_gguf, tmp_path):
    ids = [5, 17, 300, 42, 8, 99, 123, 7]
    with Model(tiny_gguf, n_threads=1) as m:
        ctx = NativeContext(m.native, 16, 1)
        ctx.set_dump_dir(tmp_path)
        ctx.decode(ids, all_logits=True)
        ctx.close()
    ref = load_reference(tiny_checkpoint)
    for layer in range(2):
        expected = capture_reference(ref, ids, layer)
        for name, want in expected.items():
            got = np.load(tmp_path / f"{layer:02d}-{name}.npy")
            assert got.shape == want.shape, name
            worst = np.abs(got - want).max()
            assert worst <= 1e-2 * np.abs(want).max(), f"layer {layer} {name}: max diff {worst:.3g}"
    # Before any int8 rounding the two agree to float precision.
    first = capture_reference(ref, ids, 0)["attn_norm"]
    np.testing.assert_allclose(np.load(tmp_path / "00-attn_norm.npy"), first, rtol=1e-5, atol=1e-6)
    assert np.load(tmp_path / "out-logits.npy").shape == (len(ids), ref.config.vocab_size)
