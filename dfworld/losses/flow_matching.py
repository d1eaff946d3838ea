"""Flow-matching loss (the teacher's training loss, and the critic's in DMD) as a TorchRL LossModule."""

from __future__ import annotations

from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from dfworld.model.transformer import VideoTransformer
from dfworld.schedule import add_noise, velocity_target


class FlowMatchingLoss(LossModule):
    """|| v(x_s, s, c) - (eps - x0) ||^2 with x_s = (1 - s) x0 + s eps (rectified flow).

    Input keys: latents [B, F, C, h, w] (x0), noise (eps), sigma [B, F], text [B, L, Dt],
    text_mask [B, L], actions [B, F], and optionally loss_mask [B, F] (frames that count) and
    loss_weight [B, F, h, w] (a weight per latent cell: each frame's error is the weighted mean).
    With `clean` [B, F, C, h, w] and `clean_sigma` [B, F] (the block-causal generator, teacher
    forcing): each chunk is denoised given the clean frames before it, as in a cached rollout
    (`VideoTransformer.forward(clean=...)`).
    Output: loss_flow.
    """

    def __init__(self, network: VideoTransformer):
        super().__init__()
        self.network = network

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        td = tensordict
        x0, eps, sigma = td["latents"], td["noise"], td["sigma"]
        x_s = add_noise(x0, eps, sigma)
        clean = (td["clean"], td["clean_sigma"]) if "clean" in td.keys() else None
        v, _ = self.network(x_s, sigma, td["text"], td["text_mask"], td["actions"], clean=clean)
        sq = (v.float() - velocity_target(x0, eps)).pow(2)  # [B, F, C, h, w]
        if "loss_weight" in td.keys():
            w = td["loss_weight"].to(sq.dtype)[:, :, None]
            err = (sq * w).sum(dim=(2, 3, 4)) / (w.sum(dim=(2, 3, 4)) * sq.shape[2]).clamp(min=1e-8)  # [B, F]
        else:
            err = sq.mean(dim=(2, 3, 4))  # [B, F]
        if "loss_mask" in td.keys():
            m = td["loss_mask"].to(err.dtype)
            loss = (err * m).sum() / m.sum().clamp(min=1)
        else:
            loss = err.mean()
        return TensorDict({"loss_flow": loss}, batch_size=[])
