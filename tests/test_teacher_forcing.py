"""Teacher forcing: one pass over (clean, noisy) copies equals the cached rollout chunk by chunk."""

import pytest
import torch

from dfworld.model.config import TransformerConfig
from dfworld.model.kv_cache import KVCache
from dfworld.model.transformer import SKIP_SCALE
from tests.test_model import inputs, tiny


@pytest.mark.parametrize("tubelet, patch, chunk, sink, window, rope_space, prev, skip, whole",
                         [(1, 4, 2, 2, 4, 0, False, False, False), (2, 2, 2, 2, 4, 2, True, False, False), (4, 2, 4, 4, 8, 2, True, False, False),
                          (1, 4, 2, 0, 4, 0, True, False, False), (2, 2, 2, 2, 4, 2, True, True, False), (4, 2, 4, 4, 8, 2, True, True, True)])
@torch.no_grad()
def test_teacher_forcing_equals_the_cached_rollout(tubelet, patch, chunk, sink, window, rope_space, prev, skip, whole):
    model = tiny(tubelet=tubelet, patch=patch, chunk_frames=chunk, sink_frames=sink, window_frames=window, rope_space=rope_space,
                 prev_frame=prev, prev_skip=skip, prev_chunk=whole)
    if skip:
        model.skip_gate.fill_(0.01)  # open: the skip's reference frame is part of what is compared
    x, sigma, text, mask, actions = inputs(2, 24)
    noisy, _, _, _, _ = inputs(2, 24, seed=1)
    sigma = sigma[:, ::chunk].repeat_interleave(chunk, 1)  # one level per chunk
    ctx = torch.full_like(sigma, 0.05)[:, :1].expand_as(sigma).contiguous()  # the clean copy's level (context noise)
    tf, _ = model(noisy, sigma, text, mask, actions, clean=(x, ctx))
    # the rollout: each noisy chunk is denoised against the cache, then its clean frames are written
    cache = KVCache(model.config, 2)
    for s in range(0, 24, chunk):
        sf = torch.full((2,), s)
        sl = slice(s, s + chunk)
        n = chunk if whole else 1  # the reference: the previous chunk frame by frame, or its last frame held
        ref = (x[:, s - n : s] if s else torch.zeros_like(x[:, :n])).expand(-1, chunk, -1, -1, -1) if prev else None
        out, _ = model(noisy[:, sl], sigma[:, sl], text, mask, actions[:, sl], start_frame=sf, cache=cache, prev=ref)
        assert (out - tf[:, sl]).abs().max().item() <= 1e-4, f"chunk at frame {s}"
        _, (k, v) = model(x[:, sl], ctx[:, sl], text, mask, actions[:, sl], start_frame=sf, cache=cache, prev=ref)
        cache.update(sf, k, v)


def test_teacher_forcing_refuses_mismatched_copies_and_full_attention():
    model = tiny()
    x, sigma, text, mask, actions = inputs(1, 4)
    with pytest.raises(ValueError, match="clean copy"):
        model(x, sigma, text, mask, actions, clean=(x[:, :2], sigma[:, :2]))
    with pytest.raises(ValueError, match="block_causal"):
        tiny("full")(x, sigma, text, mask, actions, clean=(x, sigma))


def test_a_reference_frame_model_reads_the_frame_and_needs_it():
    model = tiny(prev_frame=True)
    with torch.no_grad():
        model.prev_in.weight.normal_(0, 0.2)
    x, sigma, text, mask, actions = inputs(1, 4)
    with pytest.raises(ValueError, match="reference frame"):
        model(x, sigma, text, mask, actions)
    a, _ = model(x, sigma, text, mask, actions, prev=torch.zeros_like(x))
    b, _ = model(x, sigma, text, mask, actions, prev=torch.ones_like(x))
    assert (a - b).abs().max() > 1e-3


@torch.no_grad()
def test_a_skip_model_starts_as_its_source_and_copies_its_reference_frame_at_no_cost():
    with pytest.raises(ValueError, match="needs prev_frame"):
        TransformerConfig(prev_skip=True)
    plain, skip = tiny(prev_frame=True), tiny(prev_frame=True, prev_skip=True)
    missing, unexpected = skip.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["skip_gate"] and not unexpected
    x, sigma, text, mask, actions = inputs(1, 4)
    ref = torch.randn_like(x)
    skip.skip_gate.zero_()  # as a new model's: the same function as the model without it
    assert torch.equal(plain(x, sigma, text, mask, actions, prev=ref)[0], skip(x, sigma, text, mask, actions, prev=ref)[0])
    skip.patch_out.weight.zero_()
    skip.patch_out.bias.zero_()  # the network outputs nothing, the gate is open
    skip.skip_gate.fill_(1 / SKIP_SCALE)
    v, _ = skip(x, torch.ones_like(sigma), text, mask, actions, prev=ref)
    torch.testing.assert_close(x - v, ref)  # at level 1 the predicted frame is the reference frame
