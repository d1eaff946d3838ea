"""Stage `delta`: the stream stage steered by Delta Forcing's trust region (dfworld.losses.delta).

Everything but the generator loss is the stream stage's: the same persistent rollouts, event
switches, windows, critic and log. The loss weighs the teacher's DMD guidance by the trust-region
weight w of each window and adds (1 - w) lambda times the continuity objective; w and the
consistency measures are logged per chunk against the chunks since the last switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tensordict import TensorDict

from dfworld.losses.delta import DeltaForcingLoss, TrustRegionConfig
from dfworld.training.loop import TrainConfig
from dfworld.training.stages.stream import StreamStage, StreamStageConfig


@dataclass(frozen=True)
class DeltaStageConfig(StreamStageConfig):
    """`dfworld train stage=delta`: the stream stage's settings and the trust region."""

    trust_region: TrustRegionConfig = field(default_factory=TrustRegionConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/delta", steps=400, batch_size=8, lr=3e-5, beta1=0.0, ema=0.99, warmup=20,
                                            checkpoint_every=50, max_minutes=12.0)
    )

    def __post_init__(self) -> None:
        # under context scoring teacher and critic read the committed frames as clean inputs, so the teacher's delta
        # there is zero by construction and so is the history measure: the trust region would never close
        if self.scoring == "context" and self.trust_region.measure == "history":
            raise ValueError("trust_region.measure=history needs scoring=window: under scoring=context the committed frames are "
                             "the teacher's clean input and their delta is zero; measure the new frames (relative_step or direction)")


class DeltaStage(StreamStage):
    name = "delta"

    def __init__(self, config: DeltaStageConfig):
        super().__init__(config)
        self.delta = DeltaForcingLoss(self.dmd, config.trust_region)

    def generator_loss(self, td: TensorDict, overlap: int, since: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
        """w DMD + (1 - w) lambda L_cont on the new frames; a window with a switch in it is not switch-free."""
        K, B = self.generator.config.chunk_frames, td.batch_size[0]
        td["overlap"] = torch.full((B,), overlap, device=self.device)
        td["switch_free"] = torch.tensor([s < 0 or s * K >= self.clip_frames for s in since], device=self.device)
        res = self.delta(td)
        measures = {k: res[f"measure_{k}"] for k in ("relative_step", "history", "direction")}
        scalars = {"loss_dmd": float(res["loss_dmd"]), "loss_continuity": float(res["loss_continuity"])}
        return res["loss_generator"], res["w"], measures, scalars

    # the trust region's running means resume with the run
    def state(self):
        tensors, meta = super().state()
        tensors.update({f"delta.{k}": v for k, v in self.delta.named_buffers(recurse=False)})
        return tensors, meta

    def load_state(self, tensors, meta):
        super().load_state(tensors, meta)
        for k, v in self.delta.named_buffers(recurse=False):
            v.copy_(tensors[f"delta.{k}"])
