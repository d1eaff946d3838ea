"""Distribution Matching Distillation (DMD, arXiv 2311.18828; as used by Self Forcing, arXiv 2506.08009).

The generator's clean output x is noised to a random level s; the critic (fake score, trained on
generator samples) and the teacher (real score, with CFG) each estimate x0 from it, and

    g = (x0_critic - x0_teacher) / mean_{F,C,h,w} |x - x0_teacher|      (DMD eq. 7-8, per sample)
    L = 0.5 || x - sg(x - g) ||^2                                        (so dL/dx = g / numel)

moves x toward the teacher's distribution (normalised per sample, as Self Forcing does).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from dfworld.model.transformer import VideoTransformer
from dfworld.sampling import guided_velocity
from dfworld.schedule import add_noise, predict_x0, shift_sigma


def dmd_direction(x: torch.Tensor, x0_critic: torch.Tensor, x0_teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """g = (x0_critic - x0_teacher) / mean |x - x0_teacher|, normalised per sample (over the frames of mask [B, F], if given)."""
    err = (x - x0_teacher).abs().mean(dim=(2, 3, 4))  # [B, F]
    if mask is None:
        norm = err.mean(1)
    else:
        m = mask.to(err.dtype)
        norm = (err * m).sum(1) / m.sum(1).clamp(min=1)
    return torch.nan_to_num((x0_critic - x0_teacher) / norm.clamp(min=1e-6)[:, None, None, None, None])


def masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-frame values err [B, F] over the frames where mask [B, F] is true."""
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp(min=1)


class DMDLoss(LossModule):
    """The DMD generator loss on a window of generated latents.

    Input keys: latents [B, F, C, h, w] (the generator's clean output, with gradient), text,
    text_mask, actions, noise, sigma [B, 1] (one DMD level per window) or [B, F] (a level per frame:
    committed frames at 0 are clean context for teacher and critic), optionally loss_mask [B, F]
    (new frames) and direction_mask [B, F] (the frames the direction is normalised over; default all:
    with a clean context, the new frames, where teacher and generator can differ). Output: loss_dmd,
    and the teacher estimate x0_teacher (detached) for the trust region.
    """

    def __init__(self, teacher: VideoTransformer, critic: VideoTransformer, guidance: float = 3.0):
        super().__init__()
        self.teacher, self.critic, self.guidance = teacher, critic, guidance

    @torch.no_grad()
    def estimates(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        x, sigma = td["latents"].detach(), td["sigma"].expand(td["latents"].shape[:2])
        x_s = add_noise(x, td["noise"], sigma)
        args = (td["text"], td["text_mask"], td["actions"])
        v_teacher = guided_velocity(self.teacher, x_s, sigma, *args, self.guidance)
        v_critic, _ = self.critic(x_s, sigma, *args)
        return predict_x0(x_s, v_critic, sigma), predict_x0(x_s, v_teacher, sigma)

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        x = tensordict["latents"]
        x0_critic, x0_teacher = self.estimates(tensordict)
        mask = tensordict.get("loss_mask", None)
        g = dmd_direction(x.detach(), x0_critic, x0_teacher, tensordict.get("direction_mask", None))
        per_frame = 0.5 * (x.float() - (x.detach() - g).float()).pow(2).mean(dim=(2, 3, 4))  # [B, F]
        return TensorDict(
            {"loss_dmd": masked_mean(per_frame, mask), "loss_dmd_frames": per_frame, "x0_teacher": x0_teacher},
            batch_size=[],
        )


def dmd_sigma(shape: tuple[int, ...], shift: float, rng: torch.Generator | None = None, low: float = 0.02, high: float = 0.98) -> torch.Tensor:
    """DMD noise levels: uniform, shifted, clamped to [low, high] (Self Forcing: t in [20, 980])."""
    return shift_sigma(torch.rand(shape, generator=rng), shift).clamp(low, high)
