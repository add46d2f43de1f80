"""How well a dual encoder ranks captions: retrieval accuracy on the demo domain's prompts."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from generation import demo_domain
from generation.demo_domain import Split
from generation.dual_encoder.data import HardNegatives
from generation.dual_encoder.model import DualEncoder


@torch.no_grad()
def retrieval_report(
    model: DualEncoder,
    text_features: Callable[[list[str]], torch.Tensor],
    split: Split = "heldout",
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
