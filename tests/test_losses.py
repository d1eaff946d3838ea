"""DMD and the Delta Forcing trust region on tiny models."""

import pytest
import torch
from tensordict import TensorDict

from dfworld.losses.delta import (
    DeltaForcingLoss,
    TrustRegionConfig,
    consistency_measures,
    continuity_frames,
    trust_weight,
)
from dfworld.losses.dmd import DMDLoss, dmd_direction
from dfworld.model.transformer import TransformerConfig, VideoTransformer


def nets():
    torch.manual_seed(0)
    cfg = TransformerConfig(latent_channels=4, latent_size=8, patch=4, dim=32, depth=1, heads=2, text_dim=16)
    teacher, critic = VideoTransformer(cfg), VideoTransformer(cfg)
    with torch.no_grad():
        for p in list(teacher.parameters()) + list(critic.parameters()):
            p.normal_(0, 0.1)
    return teacher, critic


def window(B=2, F=6, overlap=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, 4, 8, 8, generator=g).requires_grad_(True)
    mask = torch.zeros(B, F, dtype=torch.bool)
    mask[:, overlap:] = True
    return TensorDict(
        {
            "latents": x, "noise": torch.randn(B, F, 4, 8, 8, generator=g), "sigma": torch.full((B, 1), 0.6),
            "text": torch.randn(B, 3, 16, generator=g), "text_mask": torch.ones(B, 3, dtype=torch.bool),
            "actions": torch.zeros(B, F, dtype=torch.long), "loss_mask": mask, "overlap": overlap,
        },
        batch_size=[],
    )


def test_dmd_gradient_is_the_normalised_direction():
    teacher, critic = nets()
    td = window()
    loss_mod = DMDLoss(teacher, critic, guidance=3.0)
    loss_mod(td)["loss_dmd"].backward()
    xc, xt = loss_mod.estimates(td)
    g = dmd_direction(td["latents"].detach(), xc, xt)
    n_masked = int(td["loss_mask"].sum())
    expected = g * td["loss_mask"][..., None, None, None] / (n_masked * 4 * 8 * 8)
    assert torch.allclose(td["latents"].grad, expected, atol=1e-7)
    assert td["latents"].grad[:, :2].abs().sum() == 0  # overlap frames get no gradient
    # with a clean context, the direction is normalised over the new frames only
    td2 = window()
    td2["direction_mask"] = td2["loss_mask"].bool()
    loss_mod(td2)["loss_dmd"].backward()
    g2 = dmd_direction(td2["latents"].detach(), *loss_mod.estimates(td2), td2["direction_mask"])
    assert torch.allclose(td2["latents"].grad, g2 * td2["loss_mask"][..., None, None, None] / (n_masked * 4 * 8 * 8), atol=1e-7)
    assert not torch.allclose(g, g2)


def test_w_one_and_lambda_zero_give_exactly_the_streaming_loss():
    teacher, critic = nets()
    dmd = DMDLoss(teacher, critic)
    delta = DeltaForcingLoss(dmd, TrustRegionConfig(shape="constant", w_const=1.0, lam=0.0))
    a = dmd(window())["loss_dmd"]
    b = delta(window())["loss_generator"]
    assert torch.equal(a, b)


def test_the_weight_dips_when_the_teacher_rewrites_the_trajectory():
    x = torch.randn(2, 6, 4, 8, 8) * 0.1
    x = x + torch.arange(6.0)[None, :, None, None, None] * 0.05  # a smooth trajectory
    teacher_close = x + 0.01 * torch.randn_like(x)
    teacher_far = x + 2.0 * torch.randn_like(x)  # wants every frame somewhere else
    for measure in ("relative_step", "history", "direction"):
        for shape in ("radius", "exponential", "sigmoid"):
            cfg = TrustRegionConfig(measure=measure, shape=shape, w_min=0.1)
            w_close = trust_weight(consistency_measures(x, teacher_close, 2), cfg)
            w_far = trust_weight(consistency_measures(x, teacher_far, 2), cfg)
            assert ((w_close >= 0.1) & (w_close <= 1)).all() and ((w_far >= 0.1) & (w_far <= 1)).all()
            if measure != "history":  # history compares overlap with new frames: both far here
                assert (w_far < w_close).all(), (measure, shape, w_close, w_far)


def test_history_disagreement_spikes_when_the_teacher_rewrites_committed_frames():
    x = torch.randn(1, 6, 4, 8, 8)
    t = x.clone()
    t[:, :2] += 3.0  # the teacher rewrites only the committed overlap frames
    t[:, 2:] += 0.1
    assert consistency_measures(x, t, 2)["history"].item() > 10


def test_monotonic_continuity_penalises_only_large_steps():
    x = torch.zeros(1, 5, 4, 8, 8, requires_grad=True)
    with torch.no_grad():
        x[:, 3:] += 1.0  # one big jump into the new frames
    small = continuity_frames(x, 2, torch.tensor(10.0), "monotonic")
    big = continuity_frames(x, 2, torch.tensor(0.1), "monotonic")
    assert small.sum() == 0 and big[:, 3] > 0 and big[:, :2].sum() == 0
    prox = continuity_frames(x, 2, torch.tensor(0.0), "proximal")
    prox.sum().backward()
    assert x.grad[:, :2].abs().sum() == 0  # committed frames get no gradient


def test_delta_loss_logs_weights_and_updates_the_running_step():
    teacher, critic = nets()
    delta = DeltaForcingLoss(DMDLoss(teacher, critic), TrustRegionConfig(measure="relative_step", calibrate=False, lam=0.5))
    out = delta(window())
    assert out["w"].shape == (2,) and out["loss_generator"].requires_grad
    assert delta.m_bar > 0 and delta.m_count == 1


@pytest.mark.parametrize("kw, message", [({"measure": "vibes"}, "measure"), ({"shape": "square"}, "shape"), ({"w_min": 2.0}, "w_min")])
def test_trust_region_config_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        TrustRegionConfig(**kw)


def test_calibrated_trust_region_is_relative_to_ordinary_windows():
    cfg = TrustRegionConfig(measure="relative_step", calibrate=True, rho=1.5, w_min=0.1)
    loss = DeltaForcingLoss(None, cfg)
    r = torch.tensor([1.0, 1.0, 1.0, 1.0])
    free = torch.tensor([True, True, True, True])
    first = loss._calibrated({"relative_step": r, "history": r, "direction": r}, free)
    assert torch.allclose(first["relative_step"], torch.ones(4)) and float(loss.r_ref) == 1.0
    # a window at a switch pulls 6 times harder than the ordinary ones: its weight shrinks to 1.5 / 6
    spike = loss._calibrated({"relative_step": torch.tensor([1.0, 6.0]), "history": r[:2], "direction": r[:2]},
                             torch.tensor([True, False]))
    w = trust_weight(spike, cfg)
    assert torch.allclose(w, torch.tensor([1.0, 0.25]))
    assert float(loss.r_ref) == 1.0  # only switch-free windows move the reference


def test_flow_matching_loss_weights_latent_cells():
    from dfworld.losses.flow_matching import FlowMatchingLoss
    from dfworld.schedule import add_noise, velocity_target

    teacher, _ = nets()
    loss = FlowMatchingLoss(teacher)
    td = window()
    td["sigma"] = td["sigma"].expand(2, 6)
    plain = loss(td)["loss_flow"]
    td["loss_weight"] = torch.full((2, 6, 8, 8), 3.0)
    assert torch.allclose(loss(td)["loss_flow"], plain, rtol=1e-5)  # a uniform weight changes nothing
    # all weight on one cell: the loss is that cell's squared error, averaged over channels and counted frames
    w = torch.zeros(2, 6, 8, 8)
    w[:, :, 3, 5] = 1.0
    td["loss_weight"] = w
    with torch.no_grad():
        v, _ = teacher(add_noise(td["latents"], td["noise"], td["sigma"]), td["sigma"], td["text"], td["text_mask"], td["actions"])
        cell = (v - velocity_target(td["latents"], td["noise"]))[:, :, :, 3, 5].pow(2).mean(2)  # [B, F]
    m = td["loss_mask"].float()
    assert torch.allclose(loss(td)["loss_flow"], (cell * m).sum() / m.sum(), rtol=1e-5)


def test_the_teacher_context_prefix_is_whole_chunks_at_a_low_level_and_out_of_the_loss():
    from types import SimpleNamespace

    from dfworld.training.stages.teacher import TeacherStage, TeacherStageConfig

    stage = SimpleNamespace(config=TeacherStageConfig(context_chunks=3, context_chunk=4, no_context_fraction=0.25, context_noise=0.1))
    sigma = torch.full((400, 16), 0.7)
    levels, context = TeacherStage._context(stage, sigma, torch.Generator().manual_seed(0))
    n = context.sum(1)
    assert set(n.tolist()) <= {0, 4, 8, 12} and 0.15 < (n == 0).float().mean() < 0.35  # whole chunks; a quarter without
    assert (context[:, :-1] >= context[:, 1:]).all()  # a prefix
    assert (levels[context] <= 0.1).all() and (levels[~context] == 0.7).all()
    row_levels = [set(levels[i][context[i]].tolist()) for i in range(400) if n[i]]
    assert all(len(r) == 1 for r in row_levels)  # one level per row
