"""Training data of the dual encoder: fresh demo images with their captions, one hard-negative caption per image
(a caption that differs in exactly one attribute), and a cache of the frozen MiniLM states of every caption."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from generation import demo_domain
from generation.demo_domain import DemoSpec, Split

ALL_KINDS = {"shape": 1.0, "position": 1.0, "word": 1.0}


class StateCache:
    """MiniLM token states of every demo caption, computed once in batches: caption -> (T, D) half tensor."""

    def __init__(self, encoder, prompts: Sequence[str], batch_size: int = 256):
        self.states: dict[str, torch.Tensor] = {}
        prompts = list(dict.fromkeys(prompts))
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            tokens, mask, _ = encoder.encode(chunk)  # (B, T, D), (B, T)
            for p, tok, m in zip(chunk, tokens, mask, strict=True):
                self.states[p] = tok[: int(m.sum())].to(torch.float16)

    def batch(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) float32 zero-padded states and (B, T) bool mask."""
        seqs = [self.states[p] for p in prompts]
        t = max(s.shape[0] for s in seqs)
        states = torch.zeros(len(seqs), t, seqs[0].shape[1])
        mask = torch.zeros(len(seqs), t, dtype=torch.bool)
        for i, s in enumerate(seqs):
            states[i, : s.shape[0]] = s.float()
            mask[i, : s.shape[0]] = True
        return states, mask


def attributes(spec: DemoSpec) -> dict[str, str]:
    return {k: v for k, v in asdict(spec).items() if k != "kind"}


class HardNegatives:
    """For a spec, the specs of `split` that differ from it in exactly one attribute."""

    def __init__(self, split: Split = "train"):
        self.groups: dict[tuple, list[DemoSpec]] = {}
        for spec in demo_domain.all_specs(split):
            for key in self._keys(spec):
                self.groups.setdefault(key, []).append(spec)

    @staticmethod
    def _keys(spec: DemoSpec) -> list[tuple]:
        attrs = attributes(spec)
        return [(spec.kind, name, tuple(sorted((k, v) for k, v in attrs.items() if k != name))) for name in attrs]

    def neighbours(self, spec: DemoSpec) -> list[DemoSpec]:
        return [s for key in self._keys(spec) for s in self.groups.get(key, []) if s != spec]

    def sample(self, spec: DemoSpec, rng: random.Random) -> DemoSpec | None:
        options = self.neighbours(spec)
        return rng.choice(options) if options else None


def make_batch(
    n: int, rng: np.random.Generator, negatives: HardNegatives, processor_size: int, split: Split = "train"
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Fresh images with their captions, plus one hard-negative caption per image.

    Returns pixel_values (B, 3, S, S) in [-1, 1], texts (B own captions then up to B negatives),
    positives (B, N) bool."""
    images, captions, specs = demo_domain.sample_batch(n, rng, split, ALL_KINDS)
    py_rng = random.Random(int(rng.integers(2**31)))
    extra = [neg.caption for s in specs if (neg := negatives.sample(s, py_rng)) is not None]
    texts = captions + extra
    positives = torch.tensor([[c == t for t in texts] for c in captions], dtype=torch.bool)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != processor_size:
        x = F.interpolate(x, size=(processor_size, processor_size), mode="bilinear", antialias=True)
    return x * 2.0 - 1.0, texts, positives
