"""The rollout with gradient through its own history: the same frames as `Rollout`, and a graph across chunks."""

from dataclasses import replace

import pytest
import torch
from conftest import random_model

from dfworld.model.conditioning import TextConditioner, VocabEncoder
from dfworld.model.transformer import TransformerConfig
from dfworld.rollout import Rollout
from dfworld.schedule import SamplerConfig
from dfworld.training.unroll import Event, unroll

CFG = TransformerConfig(latent_channels=4, latent_size=8, patch=4, dim=32, depth=2, heads=2, text_dim=16, text_tokens=16,
                        attention="block_causal", chunk_frames=2, sink_frames=2, window_frames=4, prev_frame=True, rope_space=2)


@pytest.fixture(scope="module")
def model():
    return random_model(CFG)


@pytest.fixture(scope="module")
def chunk_model():
    """A model whose reference is its previous chunk frame by frame, with the skip open (model.prev_chunk)."""
    m = random_model(replace(CFG, prev_chunk=True, prev_skip=True))
    with torch.no_grad():
        m.skip_gate.fill_(0.01)
    return m


def rollout_noise(seeds, levels, solver):
    """Each row's chunk noise as the rollout draws it with repeat_noise: [B, 1, levels, K, C, h, w]."""
    shape = (CFG.chunk_frames, CFG.latent_channels, CFG.latent_size, CFG.latent_size)
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        draws = [torch.randn(shape, generator=g) for _ in range(levels if solver == "renoise" else 1)]
        out.append(torch.stack(draws + [torch.zeros(shape)] * (levels - len(draws))))
    return torch.stack(out)[:, None]


@pytest.mark.parametrize("sampler", [SamplerConfig(), SamplerConfig(timesteps=(1000.0,)), SamplerConfig(timesteps=(1000.0, 500.0), solver="euler")])
@pytest.mark.parametrize("which", ["model", "chunk_model"])
def test_unroll_gives_the_rollouts_frames_through_an_event_after_the_window_rolled_over(which, sampler, request):
    model = request.getfixturevalue(which)
    cond = TextConditioner("vocab", 16, 16, encoder=VocabEncoder(16, 16))
    B, K, chunks, seeds = 2, CFG.chunk_frames, 6, [5, 6]
    g = torch.Generator().manual_seed(1)
    context = torch.randn(B, 2 * K, 4, 8, 8, generator=g)
    ctx_actions = torch.randint(0, 5, (B, 2 * K), generator=g)
    actions = torch.randint(0, 5, (B, chunks * K), generator=g)
    r = Rollout(model, cond, B, sampler)
    r.reset([0, 1], ["night falls", "dusk falls"], seeds, context, ctx_actions)
    text, mask = r.text.clone(), r.text_mask.clone()
    expected = []
    for j in range(chunks):
        if j == 4:
            r.set_prompt([1], ["the red object turns blue"])
            event = Event(4, torch.tensor([False, True]), r.text.clone(), r.text_mask.clone())
        expected.append(r.generate(actions[:, j * K : (j + 1) * K]))
    with torch.no_grad():
        got = unroll(model, sampler, text, mask, context, ctx_actions, actions, rollout_noise(seeds, len(sampler.timesteps), sampler.solver),
                     [event])
    torch.testing.assert_close(got, torch.cat(expected, 1), atol=1e-5, rtol=1e-5)


def test_a_late_chunks_loss_reaches_the_chunks_before_it(model):
    B, K, chunks = 2, CFG.chunk_frames, 5
    cond = TextConditioner("vocab", 16, 16, encoder=VocabEncoder(16, 16))
    text, mask = cond(["night falls", "dusk falls"], "cpu")
    text, mask = torch.nn.functional.pad(text, (0, 0, 0, 16 - text.shape[1])), torch.nn.functional.pad(mask, (0, 16 - mask.shape[1]))
    sampler = SamplerConfig(timesteps=(1000.0, 500.0))
    noise = torch.randn(B, chunks, 2, K, 4, 8, 8, requires_grad=True)
    out = unroll(model, sampler, text, mask, torch.randn(B, K, 4, 8, 8), torch.zeros(B, K, dtype=torch.long),
                 torch.zeros(B, chunks * K, dtype=torch.long), noise)
    (grad,) = torch.autograd.grad(out[:, -K:].square().sum(), noise)
    # chunk 0 left the window before the last chunk; its last level's noise still moves the last chunk, through chunks 1-3
    assert grad[:, 0, 1].abs().sum() > 0
    assert grad[:, 0, 0].abs().sum() == 0  # levels before the last run without gradient (as Self Forcing)
    assert grad[:, -1, 1].abs().sum() > 0


def test_unroll_refuses_a_context_that_is_not_whole_chunks(model):
    with pytest.raises(ValueError, match="whole chunks"):
        unroll(model, SamplerConfig(), torch.zeros(1, 16, 16), torch.ones(1, 16, dtype=torch.bool), torch.zeros(1, 3, 4, 8, 8),
               torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 1, 4, 2, 4, 8, 8))
