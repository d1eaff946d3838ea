"""Delta Forcing: teacher supervision confined to an adaptive trust region (arXiv 2605.14382).

The paper's full text is not available here, only its abstract; these formulas are this
project's reconstruction (DESIGN.md section 3), and every choice is a config field.

For a streaming window of generator latents x (O committed overlap frames, then N new frames)
and the teacher's estimate x0_teacher (with the stage's guidance):

- teacher delta      d_f = x0_teacher_f - x_f          (how far the teacher wants to move frame f)
- transition         D_f = x_f - x_{f-1}               (the trajectory's own step)
- measures (no grad): relative step  r = mean_N |d_f| / (|D_f| + eps)
                      history        h = mean_O |d_f| / mean_N |d_f|
                      direction      c = mean_N cos(D_f + d_f, D_f)
- trust-region weight w in [w_min, 1] (detached): radius min(1, rho / m), exponential
  exp(-kappa max(0, m - rho)), or a sigmoid gate; m is r or h (for direction, the gate is on c).
  With `calibrate`, m is first divided by its running mean on switch-free windows, so rho is in
  units of an ordinary chunk's value (the teacher's typical pull on this generator), not absolute
- continuity: monotonic  mean_N relu(|D_f|^2 - m_bar), m_bar a running mean of |D|^2 on
  switch-free windows (only transitions larger than the natural step are penalised), or
  proximal mean_N |x_f - sg(x_{f-1})|^2
- generator loss: w L_DMD + lambda (1 - w) L_cont; the critic loss is unchanged.

With w = 1 and lambda = 0 the loss is exactly the streaming DMD loss (a test holds it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from dfworld.losses.dmd import DMDLoss, masked_mean

MEASURES = ("relative_step", "history", "direction")
SHAPES = ("radius", "exponential", "sigmoid", "constant")
CONTINUITY = ("monotonic", "proximal")


@dataclass(frozen=True)
class TrustRegionConfig:
    """Delta Forcing's trust region and continuity objective (a reconstruction; see the module docstring)."""

    measure: str = "history"  # relative_step, history (the teacher's disagreement with the committed frames) or direction
    shape: str = "radius"  # radius, exponential, sigmoid, or constant (ablation: w = w_const)
    rho: float = 1.0  # trust radius on the measure
    kappa: float = 1.0  # sharpness of the exponential shape
    temperature: float = 0.1  # width of the sigmoid gate
    tau: float = 0.5  # sigmoid threshold on the direction measure
    w_min: float = 0.2  # the weight never falls below this (events must still take effect)
    w_const: float = 1.0  # the weight of the constant shape
    continuity: str = "monotonic"  # monotonic or proximal
    lam: float = 0.5  # lambda: weight of (1 - w) L_cont
    ema: float = 0.99  # running means (transition size; the calibrated measure) on switch-free windows
    calibrate: bool = True  # divide the measure by its running mean on switch-free windows (rho in units of it)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        for name, allowed in (("measure", MEASURES), ("shape", SHAPES), ("continuity", CONTINUITY)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"trust_region.{name}={getattr(self, name)!r}; expected one of {allowed}")
        if not 0.0 <= self.w_min <= 1.0:
            raise ValueError(f"trust_region.w_min={self.w_min} must be in [0, 1]")


def _frame_abs(t: torch.Tensor) -> torch.Tensor:
    return t.abs().mean(dim=(2, 3, 4))  # [B, F]


@torch.no_grad()
def consistency_measures(x: torch.Tensor, x0_teacher: torch.Tensor, overlap: int, eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """r, h and c per window [B] (module docstring); needs at least one frame before the new ones."""
    if overlap < 1 or overlap >= x.shape[1]:
        raise ValueError(f"the measures need 1 <= overlap < frames, got overlap={overlap} of {x.shape[1]} frames")
    d = x0_teacher - x  # teacher delta
    D = x[:, 1:] - x[:, :-1]  # D_f for f >= 1, [B, F-1, ...]
    dN, DN = d[:, overlap:], D[:, overlap - 1 :]  # new frames and their transitions
    r = (_frame_abs(dN) / (_frame_abs(DN) + eps)).mean(1)
    h = _frame_abs(d[:, :overlap]).mean(1) / (_frame_abs(dN).mean(1) + eps)
    c = F.cosine_similarity((DN + dN).flatten(2), DN.flatten(2), dim=2, eps=eps).mean(1)
    return {"relative_step": r, "history": h, "direction": c}


def trust_weight(measures: dict[str, torch.Tensor], cfg: TrustRegionConfig) -> torch.Tensor:
    """w in [w_min, 1] per window [B], detached."""
    m = measures[cfg.measure]
    if cfg.shape == "constant":
        w = torch.full_like(m, cfg.w_const)
    elif cfg.measure == "direction":  # high agreement is trusted
        if cfg.shape == "sigmoid":
            w = torch.sigmoid((m - cfg.tau) / cfg.temperature)
        elif cfg.shape == "radius":
            w = ((m + 1) / (1 + cfg.rho)).clamp(max=1.0)  # cos in [-1, 1]; full trust from cos >= rho
        else:
            w = torch.exp(-cfg.kappa * (cfg.rho - m).clamp(min=0))
    elif cfg.shape == "radius":  # TRPO/PPO-like: shrink a step beyond the radius
        w = (cfg.rho / m.clamp(min=cfg.eps)).clamp(max=1.0)
    elif cfg.shape == "exponential":
        w = torch.exp(-cfg.kappa * (m - cfg.rho).clamp(min=0))
    else:
        w = torch.sigmoid((cfg.rho - m) / cfg.temperature)
    return w.clamp(cfg.w_min, 1.0).detach() if cfg.shape != "constant" else w.detach()


def continuity_frames(x: torch.Tensor, overlap: int, m_bar: torch.Tensor, form: str) -> torch.Tensor:
    """Per-frame continuity loss [B, F] (zero on overlap frames)."""
    out = torch.zeros(x.shape[:2], device=x.device, dtype=torch.float32)
    if form == "proximal":
        step = (x[:, overlap:] - x[:, overlap - 1 : -1].detach()).pow(2).mean(dim=(2, 3, 4))
    else:
        size = (x[:, overlap:] - x[:, overlap - 1 : -1]).pow(2).mean(dim=(2, 3, 4))
        step = F.relu(size - m_bar)
    out[:, overlap:] = step.float()
    return out


class DeltaForcingLoss(LossModule):
    """w L_DMD + lambda (1 - w) L_cont on a streaming window (module docstring).

    Input keys: those of DMDLoss, plus `overlap` (the committed frames at the window's start: an int or [B])
    and `switch_free` [B] (windows without a recent switch update the running transition size).
    Output: loss_generator, loss_dmd, loss_continuity, and the per-window w and measures.
    """

    def __init__(self, dmd: DMDLoss, config: TrustRegionConfig):
        super().__init__()
        self.dmd, self.config = dmd, config
        self.register_buffer("m_bar", torch.zeros(()))  # running mean of |D|^2 on switch-free windows
        self.register_buffer("m_count", torch.zeros(()))
        self.register_buffer("r_ref", torch.zeros(()))  # running mean of the measure on switch-free windows
        self.register_buffer("r_count", torch.zeros(()))

    @torch.no_grad()
    def _calibrated(self, measures: dict[str, torch.Tensor], free: torch.Tensor) -> dict[str, torch.Tensor]:
        """With `calibrate`, the measure relative to its running mean on switch-free windows.

        The reference is the mean before this batch (on the first batch: this batch's switch-free
        windows; with none yet, the weight is 1). Then the switch-free windows update it.
        """
        cfg = self.config
        if not cfg.calibrate or cfg.measure == "direction":
            return measures
        m = measures[cfg.measure]
        batch = m[free].mean() if bool(free.any()) else None
        ref = self.r_ref if self.r_count > 0 else batch
        out = dict(measures)
        out[cfg.measure] = m / ref.clamp(min=cfg.eps) if ref is not None else torch.zeros_like(m)
        if batch is not None:
            self.r_ref.copy_(batch if self.r_count == 0 else cfg.ema * self.r_ref + (1 - cfg.ema) * batch)
            self.r_count += 1
        return out

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        cfg = self.config
        x = tensordict["latents"]
        overlap = tensordict["overlap"]  # an int, or the same value per row [B]
        overlap = int(overlap.flatten()[0]) if torch.is_tensor(overlap) else int(overlap)
        mask = tensordict.get("loss_mask", None)
        out = self.dmd(tensordict)
        measures = consistency_measures(x.detach(), out["x0_teacher"], overlap, cfg.eps)
        free = tensordict.get("switch_free", torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
        w = trust_weight(self._calibrated(measures, free), cfg)
        # the running natural step size, from switch-free windows
        with torch.no_grad():
            if bool(free.any()):
                size = (x[free, overlap:] - x[free, overlap - 1 : -1]).detach().pow(2).mean()
                first = self.m_count == 0
                self.m_bar.copy_(torch.where(first, size, cfg.ema * self.m_bar + (1 - cfg.ema) * size))
                self.m_count += 1
        cont = continuity_frames(x, overlap, self.m_bar, cfg.continuity)
        loss = masked_mean(w[:, None] * out["loss_dmd_frames"], mask) + cfg.lam * masked_mean((1 - w)[:, None] * cont, mask)
        return TensorDict(
            {
                "loss_generator": loss,
                "loss_dmd": out["loss_dmd"].detach(),
                "loss_continuity": masked_mean(cont, mask).detach(),
                "w": w,
                **{f"measure_{k}": v for k, v in measures.items()},
            },
            batch_size=[],
        )
