"""Stage `teacher`: the bidirectional video transformer, trained by flow matching on single-event clips.

The clips come from `dfworld data clips`: each clip's event happens before its first frame, so
the teacher never sees a switch (as Wan-class teachers never see prompt changes). Text and
actions are dropped independently for classifier-free guidance.

Context. A world model continues given frames, so the teacher learns p(frames | earlier frames,
actions, text): on most rows a chunk-aligned prefix of the clip (1 to `context_chunks` chunks) is
context, noised only to a low level drawn per row (context-noise augmentation; the level is the
model's input as for any frame), and the loss counts the frames after it only. Rows without
context keep the from-noise task. The same module is the critic of DMD.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import to_dict
from dfworld.losses.flow_matching import FlowMatchingLoss
from dfworld.model.codec import LatentCodec
from dfworld.model.conditioning import TextConditioner
from dfworld.model.loading import GENERATOR_STAGES, TextConfig, codec_from
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.schedule import sample_sigma
from dfworld.training.loop import TrainConfig, adamw, optimize, set_lr
from dfworld.training.stages.base import CarriesCodecAndText
from dfworld.world.datasets import ClipTensors, load_clips
from dfworld.world.events import all_event_texts, paraphrase_split, parse_event, training_wordings
from dfworld.world.render import entity_boxes_mask

CODEC_CARRIERS = ("codec", "teacher") + GENERATOR_STAGES  # checkpoints whose codec a teacher may train on


@dataclass(frozen=True)
class TeacherStageConfig:
    """`dfworld train stage=teacher`."""

    clips: str = "data/clips"  # clips data set (dfworld data clips)
    codec_checkpoint: str = "runs/codec/checkpoint"  # codec checkpoint (stage=codec), or any checkpoint carrying one (teacher, generator)
    # attention must be full; tubelet tokens: 2x2 latent patches over 4 frames (16 tokens per frame, as patch 4);
    # axial space-time rotary positions, so a token finds the same place in a context frame
    model: TransformerConfig = field(default_factory=lambda: TransformerConfig(patch=2, tubelet=4, attention="full", rope_space=4))
    text: TextConfig = field(default_factory=TextConfig)  # the text encoder
    text_cache: str = ""  # optional safetensors of precomputed embeddings; texts found there skip the encoder
    shift: float = 3.0  # timestep shift of the training noise levels and the sampler
    text_dropout: float = 0.1  # probability of training a row with the null text
    action_dropout: float = 0.1  # probability of training a row with null actions
    # each step draws a row's wording among its event's paraphrases (of the clip prompt's split),
    # instead of the one wording stored with the clip: the same scene under every wording
    resample_wording: bool = True
    # with resample_wording, training clips also draw among their event's extra training wordings
    # (dfworld.world.events.EXTRA_WORDINGS): 13 wordings per event instead of 5
    extra_wordings: bool = False
    # loss weight of the latent cells where objects, the agent and the coin are drawn, relative to 1 for
    # the rest: they are a few percent of the cells but carry what the prompts name (colours, presence)
    entity_weight: float = 1.0
    # loss weight added on the latent cells of the object the clip's event names as present (appear: the
    # new object; recolour: the object in its new colour). A colour word decides a few cells of one
    # object: the cells that tell "a red object appears" from "a blue object appears"
    event_weight: float = 0.0
    # context: a prefix of 1..context_chunks chunks of context_chunk frames on all rows but no_context_fraction,
    # at a level uniform in [0, context_noise]; the loss counts the frames after it
    context_chunks: int = 3
    context_chunk: int = 4
    no_context_fraction: float = 0.2
    context_noise: float = 0.1
    # bf16 autocast; a high peak learning rate, cosine-decayed over the time budget (docs/experiments/teacher-learning-rate.md)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/teacher", steps=40000, lr=3e-3, warmup=100, decay="cosine", final_lr=0.05,
                                            ema=0.995, max_minutes=38.0, precision="auto")
    )


@torch.inference_mode()
def encode_clips(codec: LatentCodec, frames: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """Latents [N, F, C, h, w] of uint8 clips [N, F, H, W, 3]."""
    flat = frames.flatten(0, 1)
    out = [codec.encode(flat[i : i + batch].to(device)).cpu() for i in tqdm(range(0, len(flat), batch), desc="encode clips", leave=False)]
    return torch.cat(out).reshape(frames.shape[:2] + out[0].shape[1:])


def entity_cells(clips: ClipTensors, latent_size: int, named_only: bool = False) -> torch.Tensor:
    """Latent cells [N, F, h, w] (bool) that overlap a drawn object, the agent or the coin.

    With `named_only`, only the cells of the object each clip's event names as present (appear: its
    colour; recolour: the new colour); clips of other events have none.
    """
    if not clips.states:
        raise ValueError("entity_weight and event_weight need the clips' true states (state_* arrays), which this data set lacks")
    world = clips.dataset.world
    out = []
    for i, prompt in enumerate(clips.prompts):
        states = {k: v[i].numpy() for k, v in clips.states.items()}
        if named_only:
            event = parse_event(prompt)
            color = {"object_appear": event.color, "object_recolor": event.to_color}.get(event.kind)
            mask = entity_boxes_mask(states, world, color) if color else np.zeros((len(states["obj_present"]), world.height, world.width), bool)
        else:
            mask = entity_boxes_mask(states, world)
        out.append(torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(mask).float(), latent_size) > 0)
    return torch.stack(out)


def stage_codec(model: TransformerConfig, text: TextConfig, codec_checkpoint: str, device) -> LatentCodec:
    """The codec a stage trains on (from any checkpoint carrying one), checked against the model's text and latent shapes."""
    if model.text_dim != text.dim or model.text_tokens != text.max_tokens:
        raise ValueError(f"model.text_dim/text_tokens ({model.text_dim}, {model.text_tokens}) must equal text.dim/max_tokens "
                         f"({text.dim}, {text.max_tokens})")
    codec = codec_from(load_checkpoint(codec_checkpoint, stage=CODEC_CARRIERS)).to(device)
    c = codec.config
    if (model.latent_channels, model.latent_size) != (c.latent_channels, c.latent_size):
        raise ValueError(f"model latent {model.latent_channels}x{model.latent_size} does not match the codec's "
                         f"{c.latent_channels}x{c.latent_size} ({codec_checkpoint})")
    return codec


def clip_conditioner(text: TextConfig, text_cache: str, prompts: list[str]) -> TextConditioner:
    """The text conditioner of a stage trained on clips, its cache warmed with every wording of every event
    (held-out ones too, so the checkpoint's cache covers the grammar) and the clips' prompts."""
    conditioner = TextConditioner(text.encoder, text.max_tokens, text.dim)
    if text_cache:
        conditioner.load(text_cache)
    conditioner.warm(sorted(set(all_event_texts("all")) | set(prompts)))
    return conditioner


def wording_table(conditioner: TextConditioner, prompts: list[str], resample: bool, extra: bool = False):
    """Texts of the clips' conditions: token embeddings [T, L, Dt], masks [T, L], and [N, K] indices into them.

    With `resample`, clip i may be trained under any of its event's K wordings (of the clip
    prompt's paraphrase split; `extra` adds the extra training wordings); else under its own prompt.
    """
    if not resample:
        text, mask = conditioner(prompts)
        return text, mask, torch.arange(len(prompts))[:, None]  # each clip its own prompt
    events = list(map(parse_event, prompts))
    wordings = [training_wordings(e.kind, extra) if paraphrase_split(p) == "train" else e.templates("heldout")
                for e, p in zip(events, prompts)]
    texts = [[t.format(a=e.color, b=e.to_color) for t in w] for e, w in zip(events, wordings)]
    K = min(len(t) for t in texts)
    table = sorted({t for row in texts for t in row})
    text, mask = conditioner(table)
    pos = {t: i for i, t in enumerate(table)}
    return text, mask, torch.tensor([[pos[t] for t in row[:K]] for row in texts])


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 (hex) of tensors' dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def clip_latents(codec: LatentCodec, frames: torch.Tensor, out: str | Path, device) -> torch.Tensor:
    """Latents of every clip, cached in `out` under the codec's weights and the clips' pixels.

    The key is what the latents are a function of: the same codec in another checkpoint (a teacher,
    a generator) and the same clips hit the cache; other clips of the same shape miss it.
    """
    from safetensors.torch import load_file, save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = codec.state_dict()
    key = tensor_digest(*(state[k] for k in sorted(state)), frames)
    path = out / f"latents-{key[:16]}-{frames.shape[0]}x{frames.shape[1]}.safetensors"
    if path.is_file():
        return load_file(str(path))["latents"]
    lat = encode_clips(codec, frames, device)
    save_file({"latents": lat.contiguous()}, str(path))
    return lat


class TeacherStage(CarriesCodecAndText):
    name = "teacher"

    def __init__(self, config: TeacherStageConfig):
        self.setup(config)
        cfg = config.model
        if cfg.attention != "full":
            raise ValueError(f"the teacher uses full attention; got model.attention={cfg.attention!r}")
        self.codec = stage_codec(cfg, config.text, config.codec_checkpoint, self.device)

        # 1. data: latents of every clip (cached per codec), prompts as padded token embeddings
        clips = load_clips(config.clips)
        self.clip_frames = clips.frames.shape[1]
        self.latents = self._latents(clips.frames)
        self.actions = clips.actions
        if config.extra_wordings and not config.resample_wording:
            raise ValueError("extra_wordings draws among an event's wordings each step: it needs resample_wording=true")
        if config.entity_weight < 0:
            raise ValueError(f"entity_weight must be >= 0, got {config.entity_weight}")
        if config.event_weight < 0:
            raise ValueError(f"event_weight must be >= 0, got {config.event_weight}")
        if config.context_chunks and (config.context_chunk % cfg.tubelet or config.context_chunks * config.context_chunk >= self.clip_frames):
            raise ValueError(f"context of up to {config.context_chunks} x {config.context_chunk} frames must be whole tubelets "
                             f"({cfg.tubelet}) and leave frames of the {self.clip_frames}-frame clips to learn from")
        if not 0 <= config.no_context_fraction <= 1 or not 0 <= config.context_noise < 1:
            raise ValueError("no_context_fraction must be in [0, 1] and context_noise in [0, 1)")
        self.entity_cells = entity_cells(clips, self.latents.shape[-1]) if config.entity_weight > 0 else None
        self.event_cells = entity_cells(clips, self.latents.shape[-1], named_only=True) if config.event_weight > 0 else None
        self.conditioner = clip_conditioner(config.text, config.text_cache, clips.prompts)
        self.text, self.text_mask, self.wording = wording_table(self.conditioner, clips.prompts, config.resample_wording,
                                                                config.extra_wordings)

        # 2. model and loss
        self.model = VideoTransformer(cfg).to(self.device)
        self.loss = FlowMatchingLoss(self.model)
        self.opt = adamw(self.model.parameters(), config.train)

    def _latents(self, frames: torch.Tensor) -> torch.Tensor:
        return clip_latents(self.codec, frames, self.train.out, self.device)

    def trained(self):
        return {"teacher": self.model}

    def optimizers(self):
        return {"teacher": self.opt}

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        cfg, B = self.config, self.train.batch_size
        idx = torch.randint(len(self.latents), (B,), generator=rng)
        x0 = self.latents[idx]
        noise = torch.randn(x0.shape, generator=rng)
        sigma = sample_sigma((B, 1), cfg.shift, rng).expand(B, x0.shape[1])  # one level per clip
        sigma, context = self._context(sigma, rng)
        drop_t = torch.rand(B, generator=rng) < cfg.text_dropout
        drop_a = torch.rand(B, generator=rng) < cfg.action_dropout
        K = self.wording.shape[1]
        words = self.wording[idx, torch.randint(K, (B,), generator=rng) if K > 1 else 0]
        dev = self.device
        text, mask, actions = self.model.drop_condition(
            self.text[words].to(dev), self.text_mask[words].to(dev), self.actions[idx].to(dev), drop_t.to(dev), drop_a.to(dev)
        )
        td = TensorDict(
            {"latents": x0, "noise": noise, "sigma": sigma, "text": text, "text_mask": mask, "actions": actions},
            batch_size=[B],
        ).to(dev)
        if context is not None:
            td["loss_mask"] = (~context).float().to(dev)
        if self.entity_cells is not None or self.event_cells is not None:
            weight = torch.ones(x0.shape[:2] + x0.shape[-2:])
            if self.entity_cells is not None:
                weight += cfg.entity_weight * self.entity_cells[idx].float()
            if self.event_cells is not None:
                weight += cfg.event_weight * self.event_cells[idx].float()
            td["loss_weight"] = weight.to(dev)
        loss = self.loss(td)["loss_flow"]
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = optimize(loss, self.opt, self.model, self.train.grad_clip)
        return {"loss_flow": loss.item(), "grad_norm": norm, "lr": self.opt.param_groups[0]["lr"]}

    def _context(self, sigma: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame levels [B, F] with each row's context prefix at its low level, and the context mask [B, F] (or None)."""
        cfg = self.config
        if not cfg.context_chunks:
            return sigma, None
        B, Fr = sigma.shape
        chunks = torch.randint(1, cfg.context_chunks + 1, (B,), generator=rng)
        chunks = torch.where(torch.rand(B, generator=rng) < cfg.no_context_fraction, 0, chunks)
        context = torch.arange(Fr)[None] < (chunks * cfg.context_chunk)[:, None]
        level = torch.rand(B, generator=rng) * cfg.context_noise
        return torch.where(context, level[:, None], sigma), context

    def checkpoint_config(self):
        return {
            "model": to_dict(self.config.model),
            "codec": to_dict(self.codec.config),
            "text": to_dict(self.config.text),
            "shift": self.config.shift,
            "clip_frames": self.clip_frames,
            "stage_config": to_dict(self.config),
        }
