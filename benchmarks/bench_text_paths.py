"""Which of the teacher's two text paths carries an event's wording into what it draws.

    python benchmarks/bench_text_paths.py --checkpoint runs/teacher/checkpoint --clips data/clips_eval --clips data/clips_eval2

The transformer reads the text twice: every block cross-attends to the text tokens, and the
mean of the projected tokens joins the adaLN condition (DiT). On held-out clips the unseen
wording costs about a quarter of the prompt accuracy (`dfworld eval teacher --wording
canonical`). This samples every clip four ways, with the same noise: the clip's own wording on
both paths, the event's first training wording on both, and the two mixed (the tokens of one,
the pooled condition of the other), and reports the share of clips whose prompted attribute
the probes find (time and weather apart from the object events). Where the mixed rows fall
between the two plain ones says how much of the wording each path carries.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm.auto import tqdm

from dfworld.bench.teacher_quality import clip_scores
from dfworld.checkpoint import load_checkpoint
from dfworld.model.loading import codec_from, conditioner_from, transformer_from
from dfworld.model.transformer import TextCondition, VideoTransformer
from dfworld.sampling import sample_clips
from dfworld.world.datasets import load_clips
from dfworld.world.events import parse_event

# (tokens, pooled): which wording each path reads
MODES = {
    "clip wording": ("clip", "clip"),
    "training wording": ("canonical", "canonical"),
    "tokens clip, pooled training": ("clip", "canonical"),
    "tokens training, pooled clip": ("canonical", "clip"),
}


class PooledFrom(VideoTransformer):
    """The teacher with the pooled text of its first `len(pooled)` rows taken from other texts.

    Set `pooled = (text, mask)` for the conditional rows; the rest of the batch (CFG's
    unconditional rows) keeps its own.
    """

    pooled: tuple[torch.Tensor, torch.Tensor] | None = None

    def condition_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> TextCondition:
        cond = super().condition_text(text, text_mask)
        if self.pooled is None:
            return cond
        alt = super().condition_text(*self.pooled).pooled
        return cond._replace(pooled=torch.cat([alt, cond.pooled[alt.shape[0]:]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a teacher checkpoint")
    ap.add_argument("--clips", action="append", required=True, metavar="DIR", help="evaluation clips (repeatable)")
    ap.add_argument("--n", type=int, default=64, help="clips per set")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ckpt = load_checkpoint(args.checkpoint, stage=("teacher",))
    plain = transformer_from(ckpt, "teacher")
    model = PooledFrom(plain.config)
    model.load_state_dict(plain.state_dict())
    model.eval()
    codec, cond = codec_from(ckpt), conditioner_from(ckpt)
    right: dict[str, dict[str, list[float]]] = {m: {"scene": [], "object": []} for m in MODES}
    for path in args.clips:
        data = load_clips(path)
        n = min(args.n, len(data.prompts))
        for mode, (tokens, pooled) in MODES.items():
            rng = torch.Generator().manual_seed(args.seed)  # the same noise in every mode
            for i in tqdm(range(0, n, args.batch), desc=f"{path}: {mode}", leave=False):
                clip = list(data.prompts[i : min(i + args.batch, n)])
                wordings = {"clip": clip, "canonical": [parse_event(p).text(0, "train") for p in clip]}
                text, mask = cond(wordings[tokens], "cpu")
                model.pooled = cond(wordings[pooled], "cpu") if pooled != tokens else None
                lat = sample_clips(model, text, mask, data.actions[i : i + len(clip)], data.frames.shape[1], args.steps,
                                   args.guidance, ckpt.config["shift"], rng, repeat_noise=True)
                with torch.inference_mode():
                    frames = codec.decode(lat).numpy()
                for f, p in zip(frames, clip):
                    group = "object" if parse_event(p).kind.startswith("object") else "scene"
                    right[mode][group].append(clip_scores(f, p, data.dataset.world)["prompt_ok"])
    print(f"\n{args.checkpoint}: {', '.join(args.clips)}, guidance {args.guidance}, {args.steps} steps, seed {args.seed}\n")
    print("| tokens / pooled text | prompt | time and weather | object events |")
    print("|---|---|---|---|")
    for mode, r in right.items():
        both = r["scene"] + r["object"]
        print(f"| {mode} | {np.mean(both):.3f} ({len(both)}) | {np.mean(r['scene']):.3f} ({len(r['scene'])}) | "
              f"{np.mean(r['object']):.3f} ({len(r['object'])}) |")


if __name__ == "__main__":
    main()
