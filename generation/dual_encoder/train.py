"""Train the dual encoder on the demo domain with a symmetric InfoNCE loss (the committed checkpoint was made
with the first command):

    python -m generation.dual_encoder.train --out demo_models/clip-demo --minutes 20 --threads 1

Every image in a batch is also contrasted with a "hard negative" caption that differs from its own in exactly
one attribute (a colour, the shape, the relation, the word), so the encoder has to read every attribute, not
just the dominant colour. Captions that occur twice in a batch count as positives for each other's images.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generation import demo_domain
from generation.dual_encoder.checkpoint import save_dual_encoder
from generation.dual_encoder.data import HardNegatives, StateCache, make_batch
from generation.dual_encoder.evaluation import retrieval_report
from generation.dual_encoder.model import DualEncoder, DualEncoderConfig
from generation.training import TimeBudget, lr_over_budget, set_lr, setup_threads


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

    setup_threads(tcfg.threads)
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
    budget = TimeBudget(tcfg.minutes)  # wall clock, from here: loading and caching do not count
    history: list[dict] = []
    step, running = 0, []
    while step < tcfg.max_steps and not budget.spent():
        set_lr(opt, lr_over_budget(step, budget.fraction(), tcfg))
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
                "seconds": round(budget.used(), 1),
                "loss": float(np.mean(running)),
                "lr": opt.param_groups[0]["lr"],
                "temperature": 1 / model.logit_scale.exp().item(),
            }
            history.append(entry)
            log(json.dumps(entry))
            running = []
    train_seconds = budget.used()

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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a training process never reaches a model hub
    parser = argparse.ArgumentParser(
        prog="python -m generation.dual_encoder.train", description=__doc__.split("\n\n")[0]
    )
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
