"""How far the text encoder alone tells which event an unseen wording names.

A model learns each event from its training wordings; a held-out paraphrase can be followed only
as far as the encoder places it with its own event. `WordingProbe` measures that: a
class-balanced, L2-regularised multinomial logistic regression from the encoder's sentence
embedding (mean-pooled, normalised tokens, what all-MiniLM-L6-v2 is trained for) to the event
kind, fitted on every training wording. What it gets wrong on the held-out wordings is out of
reach of any model that reads the same encoder and learns from the same wordings as simply;
`benchmarks/bench_wording.py` reports it per wording and per evaluation clip.

Its out-of-template accuracy (each training template predicted by a probe fitted without it)
estimates the same from the training wordings alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dfworld.world.config import COLOR_NAMES
from dfworld.world.events import EVENT_KINDS, n_color_args, training_wordings


def sentence_features(tokens: list[torch.Tensor]) -> torch.Tensor:
    """The sentence embedding of each text, [N, dim]: mean-pooled token embeddings, L2-normalised."""
    return F.normalize(torch.stack([t.to(torch.float64).mean(0) for t in tokens]), dim=-1)


def training_corpus(extra: bool = True) -> tuple[list[str], list[int], list[int]]:
    """Every training wording of every event kind with its colour slots filled: texts, kind indices, template ids."""
    texts, kinds, groups = [], [], []
    template = 0
    for k, kind in enumerate(EVENT_KINDS):
        n = n_color_args(kind)
        for tpl in training_wordings(kind, extra):
            if n == 0:
                filled = [tpl]
            elif n == 1:
                filled = [tpl.format(a=a) for a in COLOR_NAMES]
            else:
                filled = [tpl.format(a=a, b=b) for a in COLOR_NAMES for b in COLOR_NAMES if a != b]
            texts += filled
            kinds += [k] * len(filled)
            groups += [template] * len(filled)
            template += 1
    return texts, kinds, groups


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with class-balanced weights and an L2 penalty ||W||^2 / (2 c N).

    The objective of scikit-learn's LogisticRegression(C=c, class_weight="balanced"), solved with
    L-BFGS in float64. Returns weight [K, dim] and bias [K].
    """
    if c <= 0:
        raise ValueError(f"the probe's inverse regularisation c must be > 0, got {c}")
    counts = torch.bincount(y, minlength=num_classes).to(x.dtype)
    if (counts == 0).any():
        raise ValueError(f"the probe has no training text for class(es) {torch.nonzero(counts == 0).flatten().tolist()}")
    sample_w = (len(y) / (num_classes * counts))[y]
    weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    l2 = 1.0 / (c * len(y))

    def closure():
        opt.zero_grad()
        ce = F.cross_entropy(x @ weight.T + bias, y, reduction="none")
        loss = (sample_w * ce).sum() / sample_w.sum() + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


class WordingProbe:
    """Event-kind probabilities of texts from their token embeddings (weight [K, dim], bias [K])."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight.double(), bias.double()

    def probs(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """[N, K] over EVENT_KINDS."""
        return torch.softmax(sentence_features(tokens) @ self.weight.T + self.bias, dim=-1)

    @classmethod
    def fit(cls, encode: Callable[[list[str]], list[torch.Tensor]], c: float = 3.0, progress: bool = True) -> tuple["WordingProbe", float]:
        """The probe fitted on every training wording, and its out-of-template accuracy (mean over templates)."""
        texts, kinds, groups = training_corpus()
        tokens = []
        for i in range(0, len(texts), 128):
            tokens += encode(texts[i : i + 128])
        x, y, g = sentence_features(tokens), torch.tensor(kinds), torch.tensor(groups)
        K = len(EVENT_KINDS)
        accuracy = []
        for group in tqdm(torch.unique(g).tolist(), desc="wording probe (out-of-template fits)", disable=not progress, leave=False):
            held = g == group
            w, b = fit_probe(x[~held], y[~held], K, c)
            accuracy.append(float(((x[held] @ w.T + b).argmax(1) == y[held]).double().mean()))
        return cls(*fit_probe(x, y, K, c)), sum(accuracy) / len(accuracy)
