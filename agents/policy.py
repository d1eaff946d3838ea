"""The PPO agent's network: a small CNN on uint8 frames with a policy head and a value head.

The encoder is shared by the two heads (TorchRL's ActorValueOperator), as in PPO on Atari
(Schulman et al. 2017, arXiv 1707.06347, section 6.2). Frames go in as they come out of the
environment, uint8 [*B, H, W, 3]; the network scales them to [-0.5, 0.5] itself, so a saved agent
needs no preprocessing to run in either environment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dfworld.world.config import ACTIONS

HEADS = ("keypoints", "flatten")
KERNELS = {  # (kernel, stride, padding) of each conv
    "keypoints": ((8, 4, 2), (3, 1, 1), (3, 1, 1)),  # H/4 maps; the softmax reads positions finer than a cell
    "flatten": ((8, 4, 2), (4, 2, 1), (3, 1, 1)),  # Nature-CNN-like: H/4, then H/8, then H/8
}


@dataclass(frozen=True)
class PolicyConfig:
    """The agent's network."""

    image_size: int = 64  # frame height and width in pixels (the environment's)
    obs_size: int = 0  # the network's input size: frames are area-downsampled to it (0: image_size)
    head: str = "keypoints"  # keypoints: spatial softmax, an (x, y) per channel; flatten: the flattened maps
    channels: tuple[int, ...] = (16, 32, 16)  # conv widths; with keypoints the last is the number of keypoints
    hidden: int = 256  # width of the feature vector
    shared: bool = True  # one encoder for both heads; False: the policy and the value each have their own
    n_actions: int = len(ACTIONS)  # discrete moves: noop, up, down, left, right

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown PolicyConfig.head {self.head!r}; expected one of {HEADS}")
        if not 1 <= len(self.channels) <= 3:
            raise ValueError(f"PolicyConfig.channels needs 1 to 3 conv widths, got {self.channels}")
        for name in ("image_size", "obs_size"):
            v = getattr(self, name)
            if (v or name == "image_size") and (v < 16 or v % 8):
                raise ValueError(f"PolicyConfig.{name} must be a multiple of 8 and at least 16, got {v}")
        if self.obs_size > self.image_size or (self.obs_size and self.image_size % self.obs_size):
            raise ValueError(f"PolicyConfig.obs_size ({self.obs_size}) must divide image_size ({self.image_size})")

    @property
    def input_size(self) -> int:
        """Height and width of what the convolutions see."""
        return self.obs_size or self.image_size


class SpatialSoftmax(nn.Module):
    """Feature maps [B, C, h, w] -> the expected (x, y) in [-1, 1] of each channel's softmax [B, 2C].

    Levine et al. 2016 (arXiv 1504.00702, section 4.2): positions become features a linear layer
    can compare, which is what walking to a coin needs.
    """

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        B, C, h, w = maps.shape
        p = maps.reshape(B, C, h * w).softmax(-1).reshape(B, C, h, w)
        xs = torch.linspace(-1, 1, w, device=maps.device, dtype=maps.dtype)
        ys = torch.linspace(-1, 1, h, device=maps.device, dtype=maps.dtype)
        x = (p.sum(2) * xs).sum(-1)  # [B, C]
        y = (p.sum(3) * ys).sum(-1)  # [B, C]
        return torch.cat([x, y], -1)  # [B, 2C]


class FrameEncoder(nn.Module):
    """uint8 frames [*B, H, W, 3] -> features [*B, hidden]."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], 3
        for i, (c_out, (k, s, p)) in enumerate(zip(cfg.channels, KERNELS[cfg.head])):
            layers.append(nn.Conv2d(c_in, c_out, k, s, p))
            if cfg.head == "flatten" or i < len(cfg.channels) - 1:  # keypoint logits stay linear
                layers.append(nn.ReLU())
            c_in = c_out
        layers.append(SpatialSoftmax() if cfg.head == "keypoints" else nn.Flatten())
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 3, cfg.input_size, cfg.input_size)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, cfg.hidden), nn.ReLU())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        H = W = self.cfg.image_size
        if pixels.dtype != torch.uint8 or pixels.shape[-3:] != (H, W, 3):
            raise ValueError(f"the agent reads uint8 frames [..., {H}, {W}, 3], got {pixels.dtype} {tuple(pixels.shape)}")
        batch = pixels.shape[:-3]
        x = pixels.reshape(-1, H, W, 3).permute(0, 3, 1, 2).float() / 255.0 - 0.5  # [B, 3, H, W]
        if self.cfg.input_size != H:
            x = nn.functional.avg_pool2d(x, H // self.cfg.input_size)  # [B, 3, obs_size, obs_size]
        return self.fc(self.convs(x)).reshape(*batch, -1)  # [*B, hidden]


def make_actor_critic(cfg: PolicyConfig):
    """(actor, critic, module): TorchRL operators over the encoder(s); `module` holds every weight.

    The actor reads `pixels` and writes `logits`, `action` and its log-probability; the critic
    reads `pixels` and writes `state_value` [*B, 1]. With `cfg.shared` one encoder serves both
    heads (ActorValueOperator); otherwise each has its own, so the value loss does not shape the
    policy's features (Andrychowicz et al. 2021, arXiv 2006.05990, section 3.2).
    """
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.modules import ActorValueOperator, ProbabilisticActor, ValueOperator

    encoder = TensorDictModule(FrameEncoder(cfg), in_keys=["pixels"], out_keys=["features"])
    policy_head = nn.Linear(cfg.hidden, cfg.n_actions)
    value_head = nn.Linear(cfg.hidden, 1)
    # small initial logits: the untrained policy is close to uniform (as in PPO implementations)
    nn.init.orthogonal_(policy_head.weight, 0.01)
    nn.init.zeros_(policy_head.bias)
    nn.init.orthogonal_(value_head.weight, 1.0)
    nn.init.zeros_(value_head.bias)
    logits = TensorDictModule(policy_head, in_keys=["features"], out_keys=["logits"])
    if not cfg.shared:
        logits = TensorDictSequential(encoder, logits)
        encoder = TensorDictModule(FrameEncoder(cfg), in_keys=["pixels"], out_keys=["features"])
    actor = ProbabilisticActor(logits, in_keys=["logits"], out_keys=["action"], distribution_class=torch.distributions.Categorical,
                               return_log_prob=True)
    critic = ValueOperator(value_head, in_keys=["features"])
    if not cfg.shared:
        critic = TensorDictSequential(encoder, critic)
        return actor, critic, nn.ModuleDict({"actor": actor, "critic": critic})
    module = ActorValueOperator(encoder, actor, critic)
    return module.get_policy_operator(), module.get_value_operator(), module
