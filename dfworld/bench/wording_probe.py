"""How far the text encoder alone tells which event an unseen wording names.

A model learns each event from its training wordings; a held-out paraphrase can be followed only
as far as the encoder places it with its own event. `WordingReader` measures that with two simple
readings of the encoder's sentence embedding (mean-pooled, normalised tokens, what
all-MiniLM-L6-v2 is trained for), both fitted on every training wording:

- `probe`: a class-balanced, L2-regularised multinomial logistic regression to the event kind;
- `centroid`: the nearest kind centroid (each kind's templates averaged, every template once).

Neither is a bound on what a model can do; they show how far the wordings and the encoder carry
a simple reading, per held-out wording and per evaluation clip (`benchmarks/bench_wording.py`).
Their out-of-template accuracy (each training template read by a reader fitted without it)
estimates the same from the training wordings alone, with no held-out wording involved.
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


def fit_centroids(x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each kind's centroid [K, dim], normalised: the mean over its templates of their mean embedding.

    Every template counts once, whatever number of colour fillings it has.
    """
    out = []
    for k in range(num_classes):
        tpls = torch.unique(groups[y == k]).tolist()
        if not tpls:
            raise ValueError(f"the centroid reader has no training text for class {k}")
        out.append(torch.stack([x[groups == t].mean(0) for t in tpls]).mean(0))
    return F.normalize(torch.stack(out), dim=-1)


READERS = ("probe", "centroid")


class WordingReader:
    """The event kind of texts from their sentence embedding, by a linear score per kind.

    `probe`: the logistic regression (weight [K, dim], bias [K]); its scores are probabilities.
    `centroid`: the nearest kind centroid (weight = the centroids, bias 0); its scores are cosines.
    """

    def __init__(self, method: str, weight: torch.Tensor, bias: torch.Tensor):
        if method not in READERS:
            raise ValueError(f"unknown wording reader {method!r}; expected one of {READERS}")
        self.method, self.weight, self.bias = method, weight.double(), bias.double()

    def scores(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """[N, K] over EVENT_KINDS: probabilities (probe) or cosines (centroid)."""
        logits = sentence_features(tokens) @ self.weight.T + self.bias
        return torch.softmax(logits, dim=-1) if self.method == "probe" else logits

    def kinds(self, tokens: list[torch.Tensor]) -> list[str]:
        return [EVENT_KINDS[j] for j in self.scores(tokens).argmax(1).tolist()]

    @staticmethod
    def _fit(method: str, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
        K = len(EVENT_KINDS)
        if method == "probe":
            return fit_probe(x, y, K, c)
        return fit_centroids(x, y, g, K), torch.zeros(K, dtype=x.dtype)

    @classmethod
    def fit(
        cls, encode: Callable[[list[str]], list[torch.Tensor]], method: str = "probe", c: float = 3.0, progress: bool = True
    ) -> tuple[WordingReader, float]:
        """The reader fitted on every training wording, and its out-of-template accuracy (mean over templates:
        each template read by a reader fitted without it)."""
        if method not in READERS:
            raise ValueError(f"unknown wording reader {method!r}; expected one of {READERS}")
        texts, kinds, groups = training_corpus()
        tokens = []
        for i in range(0, len(texts), 128):
            tokens += encode(texts[i : i + 128])
        x, y, g = sentence_features(tokens), torch.tensor(kinds), torch.tensor(groups)
        accuracy = []
        for group in tqdm(torch.unique(g).tolist(), desc=f"wording {method} (out-of-template fits)", disable=not progress, leave=False):
            held = g == group
            w, b = cls._fit(method, x[~held], y[~held], g[~held], c)
            accuracy.append(float(((x[held] @ w.T + b).argmax(1) == y[held]).double().mean()))
        return cls(method, *cls._fit(method, x, y, g, c)), sum(accuracy) / len(accuracy)
