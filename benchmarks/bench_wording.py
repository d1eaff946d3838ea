"""How close the held-out paraphrases sit to the training ones in the text encoder's space.

    python benchmarks/bench_wording.py            # MiniLM, the default text encoder

The teacher learns each event from its training paraphrases only, so a held-out wording can be
followed only as far as the encoder places it near its own event. For every held-out wording of
the scene events (time of day, weather; the object events differ by their colour words) this
prints the nearest training wording by cosine of the mean-pooled, normalised MiniLM embedding
(the sentence embedding the model is trained for), and the nearest event centroid. Two simple
classifiers on the encoder alone: how many held-out wordings they place in the right event is a
guide to how far wording can carry a model trained on these paraphrases. It does so twice: with
the five primary training wordings per event, and with the extra training wordings added.

Then the two wording readers of `dfworld.bench.wording_probe` over every event kind: the probe
(a regularised logistic regression from the sentence embedding to the event kind) and the
nearest kind centroid. For each: its kind for every held-out wording (object wordings with red
and blue), its out-of-template accuracy on the training wordings, and with `--clips DIR`
(repeatable) the share of an evaluation set's clips whose prompt it places in the right kind: how
far a simple reading of this encoder, learning from these wordings, carries there.

With `--checkpoint name=path` (repeatable; a teacher or generator), also the nearest-centroid
placement in each model's own pooled text features (its learned text projection, mean over the
tokens): how well the text path the model learned carries an unseen wording.
"""

from __future__ import annotations

import argparse

import torch

from dfworld.bench.wording_probe import READERS, WordingReader, sentence_features
from dfworld.model.conditioning import make_encoder
from dfworld.world.datasets import load_clips
from dfworld.world.events import EVENT_KINDS, n_color_args, parse_event, templates, training_wordings


def placement(enc, kinds: list[str], train: list[tuple[str, str]], heldout: list[tuple[str, str]]) -> tuple[list[str], int, int]:
    """Table rows, and how many held-out wordings the nearest training wording / nearest centroid put in the right event."""
    tr, ho = sentence_features(enc.encode([t for _, t in train])), sentence_features(enc.encode([t for _, t in heldout]))
    centroids = torch.stack([torch.nn.functional.normalize(tr[[i for i, (k, _) in enumerate(train) if k == kind]].mean(0), dim=0) for kind in kinds])
    rows, nn_ok, centroid_ok = [], 0, 0
    for (kind, text), e in zip(heldout, ho):
        sims = tr @ e
        j = int(sims.argmax())
        c = kinds[int((centroids @ e).argmax())]
        nn_ok += train[j][0] == kind
        centroid_ok += c == kind
        rows.append(f"| {text} | {kind} | {train[j][1]} ({float(sims[j]):.2f}) | {train[j][0]} | {c} |")
    return rows, nn_ok, centroid_ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="minilm", help="text encoder (minilm, or vocab for a dry run)")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="also place the wordings in this model's pooled text features")
    ap.add_argument("--probe-c", type=float, default=3.0, help="the wording probe's inverse L2 strength")
    ap.add_argument("--clips", action="append", default=[], metavar="DIR",
                    help="also count the clips of this data set whose prompt the probe places right")
    args = ap.parse_args()
    torch.set_num_threads(2)
    kinds = [k for k in EVENT_KINDS if n_color_args(k) == 0]
    heldout = [(k, t) for k in kinds for t in templates(k, "heldout")]
    enc = make_encoder(args.encoder)
    n = len(heldout)
    for label, extra in (("the 5 primary training wordings", False), ("the primary and the extra training wordings", True)):
        train = [(k, t) for k in kinds for t in training_wordings(k, extra)]
        rows, nn_ok, centroid_ok = placement(enc, kinds, train, heldout)
        print(f"\n## {label} ({len(train) // len(kinds)} per event)\n")
        print("| held-out wording | event | nearest training wording (cosine) | its event | nearest centroid |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
        print(f"\nnearest training wording in the right event: {nn_ok}/{n}; nearest centroid: {centroid_ok}/{n} ({args.encoder})")
    for method in READERS:
        reader_report(enc, method, args.probe_c, args.clips)
    for spec in args.checkpoint:
        name, _, path = spec.partition("=")
        model_report(name, path, kinds, heldout)


def model_report(name: str, path: str, kinds: list[str], heldout: list[tuple[str, str]]) -> None:
    from dfworld.checkpoint import load_checkpoint
    from dfworld.model.loading import conditioner_from, transformer_from

    ckpt = load_checkpoint(path)
    module = next(m for m in ("teacher", "generator") if m in ckpt.modules())
    model, cond = transformer_from(ckpt, module), conditioner_from(ckpt)

    @torch.no_grad()
    def pooled(texts: list[str]) -> torch.Tensor:
        tokens, mask = cond(texts)
        tx, m = model.text_in(tokens), mask[..., None].float()
        return torch.nn.functional.normalize((tx * m).sum(1) / m.sum(1), dim=-1)

    train = [(k, t) for k in kinds for t in training_wordings(k, True)]
    tr, ho = pooled([t for _, t in train]), pooled([t for _, t in heldout])
    centroids = torch.stack([torch.nn.functional.normalize(tr[[i for i, (k, _) in enumerate(train) if k == kind]].mean(0), dim=0) for kind in kinds])
    placed = [kinds[int(j)] for j in (ho @ centroids.T).argmax(1)]
    right = sum(p == k for p, (k, _) in zip(placed, heldout))
    wrong = ", ".join(f"{t!r} -> {p}" for p, (k, t) in zip(placed, heldout) if p != k)
    print(f"\n{name} ({module}): nearest centroid of its pooled text features right for {right}/{len(heldout)}; wrong: {wrong}")


def reader_report(enc, method: str, c: float, clip_sets: list[str]) -> None:
    reader, out_of_template = WordingReader.fit(enc.encode, method, c)
    heldout = [(k, t.format(a="red", b="blue")) for k in EVENT_KINDS for t in templates(k, "heldout")]
    scores = reader.scores(enc.encode([t for _, t in heldout]))
    what = f"probe, c={c}" if method == "probe" else "nearest kind centroid"
    score = "probability" if method == "probe" else "cosine"
    print(f"\n## the wording {method} (dfworld.bench.wording_probe, {what}), every event kind\n")
    print(f"| held-out wording | event | its kind ({score}) |")
    print("|---|---|---|")
    right = 0
    for (kind, text), p in zip(heldout, scores):
        j = int(p.argmax())
        right += EVENT_KINDS[j] == kind
        print(f"| {text} | {kind} | {EVENT_KINDS[j]} ({float(p[j]):.2f}) |")
    print(f"\nheld-out wordings in the right kind: {right}/{len(heldout)}; out-of-template accuracy on the training templates: {out_of_template:.3f}")
    for path in clip_sets:
        prompts = [str(p) for p in load_clips(path).prompts]
        kinds = reader.kinds(enc.encode(prompts))
        ok = sum(k == parse_event(p).kind for p, k in zip(prompts, kinds))
        print(f"{path}: the {method} names the right event kind for {ok}/{len(prompts)} clips ({ok / len(prompts):.1%})")


if __name__ == "__main__":
    main()
