"""ODE initialisation of the block-causal student (CausVid, arXiv 2412.07772; Self Forcing's ode_init).

The teacher's Euler trajectories are stored at the student's few noise levels plus the clean end.
Each chunk of the student's input is drawn independently from one stored level (the clean end
included, so the student also learns to read clean context, as it does at generation time), and
the student regresses the clean end from it, with the block-causal mask. Chunks given clean
count for nothing.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from dfworld.losses.dmd import masked_mean
from dfworld.model.transformer import VideoTransformer
from dfworld.schedule import predict_x0


class OdeRegressionLoss(LossModule):
    """|| x0_student(x_level, s_level) - x0_teacher ||^2 over chunks at a noisy level.

    Input keys: states [B, K + 1, F, C, h, w] (the trajectory at K levels, then the clean end),
    sigmas [K] (the levels' noise), level [B, F] (index into states per frame, constant within
    a chunk; K = clean), text, text_mask, actions. Output: loss_ode.
    """

    def __init__(self, student: VideoTransformer):
        super().__init__()
        self.student = student

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        td = tensordict
        states, level = td["states"], td["level"]
        K = states.shape[1] - 1
        idx = level[:, None, :, None, None, None].expand(-1, 1, -1, *states.shape[3:])
        x = states.gather(1, idx)[:, 0]  # [B, F, C, h, w]
        table = torch.cat([td["sigmas"][0], td["sigmas"].new_zeros(1)])  # [K + 1]
        sigma = table[level]  # [B, F]
        v, _ = self.student(x, sigma, td["text"], td["text_mask"], td["actions"])
        err = (predict_x0(x, v, sigma).float() - states[:, K].float()).pow(2).mean(dim=(2, 3, 4))
        return TensorDict({"loss_ode": masked_mean(err, level < K)}, batch_size=[])
