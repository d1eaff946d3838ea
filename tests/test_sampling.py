"""The one teacher sampler: diffusers' Euler scheduler, shared by clip sampling and the ODE pairs."""

import pytest
import torch

from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.sampling import euler_sample, guided_velocity, initial_noise, sample_clips, teacher_scheduler
from dfworld.schedule import shift_sigma, student_sigmas
from dfworld.training.stages.ode import euler_grid_indices, teacher_trajectories


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = VideoTransformer(TransformerConfig(latent_channels=4, latent_size=8, patch=4, dim=32, depth=1, heads=2, text_dim=16,
                                               text_tokens=8, attention="full"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


def condition(B=2, F=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 8, 16, generator=g), torch.ones(B, 8, dtype=torch.bool), torch.randint(0, 5, (B, F), generator=g)


def test_the_uniform_grid_holds_the_generator_levels():
    sched = teacher_scheduler(16, 5.0, "uniform")
    want = torch.cat([shift_sigma(torch.linspace(1.0, 0.0, 17)[:-1], 5.0), torch.zeros(1)])
    assert torch.allclose(sched.sigmas, want, atol=1e-6)
    keep = euler_grid_indices(16, (1000.0, 750.0, 500.0, 250.0))
    assert torch.allclose(sched.sigmas[keep], student_sigmas((1000.0, 750.0, 500.0, 250.0), 5.0), atol=1e-6)
    with pytest.raises(ValueError, match="unknown Euler grid"):
        teacher_scheduler(16, 5.0, "cosine")


@pytest.mark.parametrize("grid", ["diffusers", "uniform"])
def test_the_scheduler_steps_are_euler_steps_of_the_guided_velocity(teacher, grid):
    text, mask, actions = condition()
    x = initial_noise(2, 8, teacher.config, True, torch.Generator().manual_seed(3))
    sched = teacher_scheduler(6, 3.0, grid)
    with torch.no_grad():
        end, states = euler_sample(teacher, x, text, mask, actions, 2.0, sched, keep=range(6))
        ref, sig = x, sched.sigmas.tolist()
        for i in range(6):  # x <- x + (s_{i+1} - s_i) v, by hand
            assert torch.allclose(states[i], ref, atol=1e-6)
            ref = ref + (sig[i + 1] - sig[i]) * guided_velocity(teacher, ref, torch.full((2, 8), sig[i]), text, mask, actions, 2.0)
    assert torch.allclose(end, ref, atol=1e-5)


def test_ode_pairs_end_where_clip_sampling_ends_on_the_same_grid(teacher):
    text, mask, actions = condition()
    keep = euler_grid_indices(8, (1000.0, 500.0))
    states = teacher_trajectories(teacher, text, mask, actions, 8, 8, 5.0, 3.0, keep, torch.Generator().manual_seed(4), True)
    clips = sample_clips(teacher, text, mask, actions, 8, steps=8, guidance=3.0, shift=5.0, rng=torch.Generator().manual_seed(4),
                         repeat_noise=True, grid="uniform")
    assert states.shape[:2] == (2, len(keep) + 1)
    assert torch.equal(states[:, -1], clips)
    assert torch.equal(states[:, 0], initial_noise(2, 8, teacher.config, True, torch.Generator().manual_seed(4)))  # level 1000: the noise


def test_a_teacher_continues_its_context_and_sees_it_at_level_zero(teacher):
    text, mask, actions = condition()
    g = torch.Generator().manual_seed(3)
    context = torch.randn(2, 4, *_latent(teacher), generator=g)
    seen = []
    real_forward = teacher.forward

    def spy(x, sigma, *args, **kw):
        seen.append((x[:, :4].clone(), sigma[:, :4].clone()))
        return real_forward(x, sigma, *args, **kw)

    teacher.forward = spy
    try:
        out = sample_clips(teacher, text, mask, actions, 8, steps=3, rng=torch.Generator().manual_seed(0), context=context)
    finally:
        del teacher.forward
    assert torch.equal(out[:, :4], context)
    # every step, both CFG branches (rows stacked as [cond, uncond]): the clean context at level 0
    assert seen and all(torch.equal(x[i], context[i % 2]) for x, _ in seen for i in range(len(x)))
    assert not any(s.any() for _, s in seen)
    free = sample_clips(teacher, text, mask, actions, 8, steps=3, rng=torch.Generator().manual_seed(0))
    assert not torch.allclose(free[:, 4:], out[:, 4:])  # and the frames after it depend on it


def _latent(model):
    c = model.config
    return c.latent_channels, c.latent_size, c.latent_size
