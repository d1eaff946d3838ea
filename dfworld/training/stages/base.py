"""What the distillation stages (ode, dmd, stream, delta) share: the frozen teacher and its codec and text.

Every distillation stage distils from one frozen teacher checkpoint and writes a generator
checkpoint that `dfworld.model.loading.load_bundle` (and so `WorldModel-v0`) reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import build, to_dict
from dfworld.model.loading import TEXT_CACHE, TextConfig, codec_from, conditioner_from, transformer_from
from dfworld.model.transformer import TransformerConfig
from dfworld.training.loop import Stage


@dataclass(frozen=True)
class StudentConfig:
    """Attention of the block-causal generator (the rest of its shape is the teacher's)."""

    chunk_frames: int = 4  # frames generated per step (K)
    sink_frames: int = 4  # first frames kept in attention forever
    window_frames: int = 12  # most recent frames in attention besides the sink


@dataclass(frozen=True)
class CriticConfig:
    """The critic (fake score) of DMD: a full-attention copy of the teacher, trained by flow matching."""

    lr: float = 2e-5  # critic learning rate (the generator's is train.lr)
    per_generator: int = 2  # critic updates per generator update (Self Forcing: 5)
    batch_size: int = 8  # generator windows per critic update
    replay_capacity: int = 256  # generator windows kept in the replay buffer


def pad_text(text: torch.Tensor, mask: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad text tokens [B, L, D] and mask [B, L] to `tokens` (fixed shapes for the replay buffer)."""
    pad = tokens - text.shape[1]
    if pad < 0:
        raise ValueError(f"text of {text.shape[1]} tokens exceeds the model's {tokens}")
    return torch.nn.functional.pad(text, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad))


class CarriesCodecAndText(Stage):
    """A stage whose checkpoint carries the codec and the text cache beside its model (teacher and generators)."""

    codec: torch.nn.Module
    conditioner: object  # dfworld.model.conditioning.TextConditioner

    def generator_checkpoint_config(self, teacher: dict | None) -> dict:
        """The config of a generator checkpoint (`load_bundle`): the generator's, codec's, text's and sampler's, the
        teacher it descends from (if any) and the stage's own."""
        return {
            "model": to_dict(self.generator.config),
            "codec": to_dict(self.codec.config),
            "text": to_dict(self.text_config),
            "sampler": to_dict(self.config.sampler),
            **({"teacher": teacher} if teacher is not None else {}),
            "stage_config": to_dict(self.config),
        }

    def extra_weights(self):
        return {f"codec.{k}": v for k, v in self.codec.state_dict().items()}

    def extra_files(self):
        path = Path(self.train.out) / TEXT_CACHE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conditioner.save(path)
        return {TEXT_CACHE: path}


class DistillStage(CarriesCodecAndText):
    """The frozen teacher, its codec and text cache, and the generator's shape derived from it."""

    generator: torch.nn.Module  # the block-causal generator the stage trains

    def _load_teacher(self, path: str) -> None:
        ckpt = load_checkpoint(path, stage="teacher")
        self.teacher_ckpt = ckpt
        self.teacher = transformer_from(ckpt, "teacher").to(self.device).requires_grad_(False)
        self.codec = codec_from(ckpt).to(self.device).requires_grad_(False)
        self.conditioner = conditioner_from(ckpt)
        self.text_config = build(TextConfig, ckpt.config.get("text", {}), f"{path}: text")
        self.shift = float(ckpt.config.get("shift", 3.0))
        self.clip_frames = int(ckpt.config.get("clip_frames", 16))

    def _student_config(self, student: StudentConfig) -> TransformerConfig:
        cfg = replace(self.teacher.config, attention="block_causal", **to_dict(student))
        if self.clip_frames % cfg.chunk_frames:
            raise ValueError(f"the teacher's clips ({self.clip_frames} frames) are not whole chunks of {cfg.chunk_frames}")
        return cfg

    def _text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        text, mask = self.conditioner(prompts, self.device)
        return pad_text(text, mask, self.teacher.config.text_tokens)

    def checkpoint_config(self):
        return self.generator_checkpoint_config({"checkpoint": self.config.teacher_checkpoint, "shift": self.shift,
                                                 "clip_frames": self.clip_frames})
