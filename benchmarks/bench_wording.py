"""How close the held-out paraphrases sit to the training ones in the text encoder's space.

    python benchmarks/bench_wording.py            # needs the `text` extra (MiniLM)

The teacher learns each event from its training paraphrases only, so a held-out wording can be
followed only as far as the encoder places it near its own event. For every held-out wording of
the scene events (time of day, weather; the object events differ by their colour words) this
prints the nearest training wording by cosine of the mean-pooled, normalised MiniLM embedding
(the sentence embedding the model is trained for), and the nearest event centroid. Two simple
classifiers on the encoder alone: how many held-out wordings they place in the right event is a
guide to how far wording can carry a model trained on these paraphrases. It does so twice: with
the five primary training wordings per event, and with the extra training wordings added.
"""

from __future__ import annotations

import argparse

import torch

from dfworld.model.conditioning import make_encoder
from dfworld.world.events import EVENT_KINDS, n_color_args, templates, training_wordings


def sentence_embeddings(encoder, texts: list[str]) -> torch.Tensor:
    return torch.stack([torch.nn.functional.normalize(e.mean(0), dim=0) for e in encoder.encode(texts)])


def placement(enc, kinds: list[str], train: list[tuple[str, str]], heldout: list[tuple[str, str]]) -> tuple[list[str], int, int]:
    """Table rows, and how many held-out wordings the nearest training wording / nearest centroid put in the right event."""
    tr, ho = sentence_embeddings(enc, [t for _, t in train]), sentence_embeddings(enc, [t for _, t in heldout])
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


if __name__ == "__main__":
    main()
