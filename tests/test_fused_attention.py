"""The exported graphs' forms of the cached step: one fused attention kernel, the sink's shift on its keys, the rotary
swap as a matmul, and the in-place cache write. Each must compute what the eager cached step computes."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_model

from dfworld.model.fused_attention import key_masked_attention
from dfworld.model.kv_cache import KVCache
from dfworld.model.layers import rope_apply
from dfworld.model.transformer import TransformerConfig

CFG = TransformerConfig(latent_channels=4, latent_size=8, patch=2, tubelet=2, dim=32, depth=2, heads=2, text_dim=16, text_tokens=8,
                        attention="block_causal", chunk_frames=2, sink_frames=2, window_frames=4, rope_space=1)


def test_the_key_mask_as_a_head_channel_equals_a_masked_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 8, generator=g) for _ in range(3))
    k, v = torch.randn(3, 2, 7, 8, generator=g), torch.randn(3, 2, 7, 8, generator=g)
    valid = torch.rand(3, 7, generator=g) > 0.5
    valid[:, -1] = True  # every row attends at least one key, as in the graphs
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None], scale=0.3).transpose(1, 2).reshape(3, 5, 16)
    torch.testing.assert_close(key_masked_attention(q, k, v, valid, 0.3), ref, atol=1e-6, rtol=0)


def test_the_rotary_swap_as_a_matmul_is_the_same_to_the_bit(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x, cos, sin = torch.randn(2, 3, 6, 8, generator=g), torch.rand(2, 1, 6, 4, generator=g), torch.rand(2, 1, 6, 4, generator=g)
    ref = rope_apply(x, cos, sin)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert torch.equal(rope_apply(x, cos, sin), ref)


@pytest.mark.parametrize("rows", [None, torch.tensor([True, True, True]), torch.tensor([True, False, True])])
@pytest.mark.parametrize("start", [[0, 8, 14], [8, 8, 8]])  # rows apart (indexed), rows in step (one strided copy)
def test_the_in_place_write_equals_the_out_of_place_one(rows, start):
    cache = KVCache(CFG, 3)
    g = torch.Generator().manual_seed(2)
    cache.k.normal_(generator=g)
    cache.v.normal_(generator=g)
    cache.valid[:, : CFG.tokens_per_frame * 2] = True
    T = CFG.chunk_frames * CFG.tokens_per_frame
    k, v = (torch.randn(CFG.depth, 3, CFG.heads, T, CFG.head_dim, generator=g) for _ in range(2))
    start = torch.tensor(start)  # the sink, the window's first slots, a ring that wrapped; or all at one place
    want = cache.written(start, k, v, rows)
    cache.update(start, k, v, rows)
    for got, ref in zip((cache.k, cache.v, cache.valid), want):
        assert torch.equal(got, ref)


def test_the_exported_cached_step_equals_the_eager_one_with_the_sink_shifted(monkeypatch):
    model = random_model(CFG)
    B, K, N = 2, CFG.chunk_frames, CFG.tokens_per_frame
    g = torch.Generator().manual_seed(3)
    cache = KVCache(CFG, B)
    cache.k.normal_(generator=g)
    cache.v.normal_(generator=g)
    cache.valid[:] = True
    cache.valid[1, 2 * N : 4 * N] = False  # row 1: part of its window not written yet
    x = torch.randn(B, K, CFG.latent_channels, CFG.latent_size, CFG.latent_size, generator=g)
    sigma = torch.full((B, K), 0.7)
    text, mask = torch.randn(B, 5, CFG.text_dim, generator=g), torch.tensor([[True] * 5, [True, True, False, False, False]])
    actions = torch.randint(0, 5, (B, K), generator=g)
    start = torch.tensor([20, 6])  # row 0 far past the window (its sink query shifted by 14 frames), row 1 not at all
    with torch.no_grad():
        v_ref, (k_ref, vv_ref) = model(x, sigma, text, mask, actions, start, cache)
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        v_out, (k_out, vv_out) = model(x, sigma, text, mask, actions, start, cache)
    torch.testing.assert_close(v_out, v_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(k_out, k_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(vv_out, vv_ref, atol=1e-5, rtol=0)
