"""The autoregressive sampler: determinism per row, partial resets, re-cache at a text event."""

import pytest
import torch
from conftest import random_model

from dfworld.model.conditioning import TextConditioner, VocabEncoder
from dfworld.model.kv_cache import KVCache
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.rollout import Rollout, _held

CFG = TransformerConfig(latent_channels=4, latent_size=8, patch=4, dim=32, depth=2, heads=2, text_dim=16, text_tokens=16,
                        attention="block_causal", chunk_frames=2, sink_frames=2, window_frames=4)


@pytest.fixture(scope="module")
def model():
    return random_model(CFG)


def make(model, batch):
    return Rollout(model, TextConditioner("vocab", 16, 16, encoder=VocabEncoder(16, 16)), batch)


def acts(B, seed=0):
    return torch.randint(0, 5, (B, CFG.chunk_frames), generator=torch.Generator().manual_seed(seed))


def test_a_row_does_not_depend_on_the_others(model):
    alone, crowd = make(model, 1), make(model, 3)
    alone.reset([0], ["night falls"], [42])
    crowd.reset([0, 1, 2], ["it starts to rain", "night falls", "the sun sets"], [1, 42, 3])
    for i in range(6):
        a = alone.generate(acts(1, i))
        c = crowd.generate(torch.cat([acts(1, 100 + i), acts(1, i), acts(1, 200 + i)]))
        assert torch.allclose(a[0], c[1], atol=1e-5)


def test_same_seed_same_latents(model):
    outs = []
    for _ in range(2):
        r = make(model, 2)
        r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
        outs.append(torch.cat([r.generate(acts(2, i)) for i in range(4)], 1))
    assert torch.equal(outs[0], outs[1])


def test_partial_reset_leaves_other_rows(model):
    r, ref = make(model, 2), make(model, 1)
    r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
    ref.reset([0], ["night falls"], [5])
    for i in range(3):
        r.generate(torch.cat([acts(1, i), acts(1, 50 + i)]))
        ref.generate(acts(1, i))
    r.reset([1], ["it starts to snow"], [9])
    assert r.frame.tolist() == [6, 0]
    for i in range(3, 8):
        a = r.generate(torch.cat([acts(1, i), acts(1, 60 + i)]))
        b = ref.generate(acts(1, i))
        assert torch.allclose(a[0], b[0], atol=1e-5)


def test_recache_with_the_same_prompt_rebuilds_the_same_cache(model):
    r = make(model, 2)
    r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
    for i in range(3):  # 6 frames: sink 2 + window 4, not yet rolled over
        r.generate(acts(2, i))
    k, v, valid = r.cache.k.clone(), r.cache.v.clone(), r.cache.valid.clone()
    r.set_prompt([0], ["night falls"])
    assert torch.equal(r.cache.valid, valid)
    assert torch.allclose(r.cache.k, k, atol=1e-5) and torch.allclose(r.cache.v, v, atol=1e-5)


def test_recache_under_a_new_prompt_changes_only_that_row(model):
    r = make(model, 2)
    r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
    for i in range(5):  # 10 frames: the window has rolled over
        r.generate(acts(2, i))
    k = r.cache.k.clone()
    r.set_prompt([1], ["the red object turns blue"])
    assert torch.equal(r.cache.k[:, 0], k[:, 0])
    assert not torch.allclose(r.cache.k[:, 1], k[:, 1])
    assert r.prompts == ["night falls", "the red object turns blue"]
    assert r.cache.valid[1].sum() == (2 + 4) * CFG.tokens_per_frame


def test_context_frame_is_the_first_chunk(model):
    r = make(model, 1)
    r.reset([0], ["night falls"], [1], context=torch.randn(1, 4, 8, 8))
    assert r.frame.tolist() == [2] and r.cache.valid[0].sum() == 2 * CFG.tokens_per_frame
    assert r.generate(acts(1)).shape == (1, 2, 4, 8, 8)


def test_errors(model):
    with pytest.raises(ValueError, match="block_causal"):
        Rollout(VideoTransformer(TransformerConfig(latent_size=8, dim=32, depth=1, heads=2, text_dim=16)), None, 1)
    r = make(model, 2)
    r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
    with pytest.raises(ValueError, match="actions must be"):
        r.generate(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="one prompt and one seed"):
        r.reset([0], ["a", "b"], [1])


def test_generate_for_training_matches_inference_and_carries_gradient_only_at_the_exit(model):
    inf, tr = make(model, 2), make(model, 2)
    for r in (inf, tr):
        r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
    with torch.no_grad():  # exit at the last level: the same chunks as inference
        for i in range(3):
            assert torch.equal(inf.generate(acts(2, i)), tr.generate(acts(2, i), exit_step=len(tr.sigmas) - 1))
    # stopping at an earlier level: gradient through that level only, and a detached cache
    x = tr.generate(acts(2, 9), exit_step=1)
    assert x.requires_grad and not tr.cache.k.requires_grad and not tr.history.requires_grad
    x.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    assert not inf.generate(acts(2, 9)).requires_grad
    with pytest.raises(ValueError, match="exit_step 4"):
        tr.generate(acts(2, 0), exit_step=4)


def test_recent_frames_are_the_last_chunks_in_time_order(model):
    r = make(model, 2)
    r.reset([0, 1], ["night falls", "dusk falls"], [1, 2])
    chunks = [r.generate(acts(2, i)) for i in range(5)]  # 10 frames: sink 2 + window 4 hold frames 0-1 and 6-9
    recent, actions = r.recent(4)
    assert torch.equal(recent, torch.cat(chunks[3:], 1))
    assert torch.equal(actions, torch.cat([acts(2, 3), acts(2, 4)], 1))
    with pytest.raises(ValueError, match="only the last 4 frames"):
        r.recent(6)


@pytest.mark.parametrize("repeat", [False, True])
def test_repeat_noise_starts_every_chunk_from_the_seeds_noise(model, repeat):
    from dfworld.schedule import SamplerConfig

    r = Rollout(model, TextConditioner("vocab", 16, 16, encoder=VocabEncoder(16, 16)), 2, SamplerConfig(repeat_noise=repeat))
    r.reset([0, 1], ["night falls", "night falls"], [7, 8])
    drawn, draw = [], r._noise
    r._noise = lambda shape, rows: drawn.append(draw(shape, rows)) or drawn[-1]  # record each level's noise
    chunks = [r.generate(acts(2, i)) for i in range(3)]
    levels = len(r.sigmas)
    per_chunk = [torch.stack(drawn[c * levels : (c + 1) * levels]) for c in range(3)]
    assert torch.equal(per_chunk[0], per_chunk[2]) == repeat and torch.equal(per_chunk[0], per_chunk[1]) == repeat
    assert not torch.equal(per_chunk[0][:, 0], per_chunk[0][:, 1])  # rows keep their own seeds
    assert not torch.equal(chunks[0], chunks[1])  # the context still moves the chunks apart
    # the seeds travel with the rollout state (exact resume of streaming training)
    other = make(model, 2)
    other.load_state(r.state(), r.prompts)
    assert other.seeds == [7, 8]


def test_initial_noise_repeats_the_first_chunk():
    from dfworld.sampling import initial_noise

    g = lambda: torch.Generator().manual_seed(3)
    rep = initial_noise(2, 7, CFG, True, g())  # 7 frames: chunks of 2 repeat, the last cut
    assert rep.shape == (2, 7, 4, 8, 8)
    assert all(torch.equal(rep[:, f], rep[:, f % CFG.chunk_frames]) for f in range(7))
    fresh = initial_noise(2, 7, CFG, False, g())
    assert not torch.equal(fresh[:, 0], fresh[:, 2]) and torch.equal(fresh[0, :2], rep[0, :2])


def test_the_text_is_projected_once_per_chunk_and_once_per_recache(model, monkeypatch):
    r = make(model, 2)
    r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
    calls = []
    real = model.condition_text
    monkeypatch.setattr(model, "condition_text", lambda *a: calls.append(1) or real(*a))
    for i in range(3):
        r.generate(acts(2, i))
    assert len(calls) == 3  # one per chunk, not one per denoising level and cache write (4 + 1 passes)
    r.set_prompt([1], ["rain begins"])
    assert len(calls) == 4  # a re-cache replays every held chunk under one projection


def test_the_shared_text_condition_gives_the_per_pass_forward_to_the_bit(model):
    x, sigma = torch.randn(2, 4, 4, 8, 8), torch.rand(2, 4)
    cond = TextConditioner("vocab", 16, 16, encoder=VocabEncoder(16, 16))
    text, mask = cond(["night falls", "a red object appears"], "cpu")
    text = torch.nn.functional.pad(text, (0, 0, 0, 16 - text.shape[1]))
    mask = torch.nn.functional.pad(mask, (0, 16 - mask.shape[1]))
    a = torch.zeros(2, 4, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(model(x, sigma, text, mask, a)[0], model(x, sigma, model.condition_text(text, mask), None, a)[0])


@pytest.mark.parametrize("prev_frame", [False, True])
def test_a_recache_and_a_partial_reset_run_the_model_on_their_rows_alone(prev_frame, monkeypatch):
    torch.manual_seed(1)
    m = VideoTransformer(TransformerConfig(**{**CFG.__dict__, "prev_frame": prev_frame})).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.1)
    few, whole = make(m, 3), make(m, 3)
    prompts = ["night falls", "dusk falls", "it starts to rain"]
    for r in (few, whole):
        r.reset([0, 1, 2], prompts, [5, 6, 7])
        for i in range(5):  # 10 frames: the window has rolled over
            r.generate(acts(3, i))
    passes = []  # (rows, frames) of every model pass: the cached step's and the one-pass writes' alike read `embed`
    real = m.embed
    monkeypatch.setattr(m, "embed", lambda x, prev: passes.append(tuple(x.shape[:2])) or real(x, prev))
    few.set_prompt([1], ["the red object turns blue"])
    assert passes == [(1, 2)] * 3  # the sink chunk and the window's two, for row 1 only
    whole.set_prompt([0, 1, 2], [prompts[0], "the red object turns blue", prompts[2]])
    assert passes[3:] == [(3, 2)] * 3
    assert torch.allclose(few.cache.k[:, 1], whole.cache.k[:, 1], atol=1e-5) and torch.equal(few.cache.valid, whole.cache.valid)
    passes.clear()
    context = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    few.reset([0, 2], ["snow falls", "night falls"], [8, 9], context=context)
    assert passes == [(2, 2)] * 2  # the context's two chunks, for rows 0 and 2 only
    whole.reset([0, 1, 2], ["snow falls", "dusk falls", "night falls"], [8, 1, 9], context=torch.cat([context[:1], context]))
    assert passes[2:] == [(3, 2)] * 2
    torch.testing.assert_close(few.generate(acts(3, 9))[[0, 2]], whole.generate(acts(3, 9))[[0, 2]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra", [{}, {"prev_frame": True, "tubelet": 2, "rope_space": 1}])
def test_the_one_pass_write_equals_the_rollouts_chunk_by_chunk_recache(extra):
    from dfworld.model.teacher_forcing import held_chunks_kv

    torch.manual_seed(2)
    m = VideoTransformer(TransformerConfig(**{**CFG.__dict__, **extra})).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.1)
    r = make(m, 2)
    r.reset([0, 1], ["night falls", "dusk falls"], [5, 6])
    for i in range(5):  # 10 frames: the sink chunk (0-1) and the window (6-9) are held, frames 2-5 are gone
        r.generate(acts(2, i))
    r.set_prompt([0, 1], ["the red object turns blue", "rain begins"])  # the torch rollout: one cached pass per chunk
    frames = torch.tensor([0, 1, 6, 7, 8, 9]).expand(2, -1)
    slots = r._slots(frames)
    prev = None if r.history_prev is None else _held(r.history_prev, slots)
    held = torch.tensor([[True, True, True], [True, True, False]])  # row 1: as if its last chunk were not there
    with torch.no_grad():
        sigma = torch.full(frames.shape, r.sampler.context_noise)
        k, v = held_chunks_kv(m, _held(r.history, slots), sigma, r._text(), _held(r.history_actions, slots), frames, held, prev)
    empty = KVCache(m.config, 2)
    empty.update_chunks(frames, k, v, held)
    one_k, one_v, one_valid = empty.k, empty.v, empty.valid
    assert int(one_valid[0].sum()) == 6 * m.config.tokens_per_frame and int(one_valid[1].sum()) == 4 * m.config.tokens_per_frame
    assert torch.equal(one_valid[0], r.cache.valid[0])
    torch.testing.assert_close(one_k[:, 0], r.cache.k[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(one_v[:, 0], r.cache.v[:, 0], atol=1e-5, rtol=0)
    # row 1's first two chunks do not see the missing third: they match the rollout's too
    first = torch.cat([r.cache.slot_index(torch.tensor([s, s]))[1] for s in (0, 6)])
    torch.testing.assert_close(one_k[:, 1][:, :, first], r.cache.k[:, 1][:, :, first], atol=1e-5, rtol=0)
