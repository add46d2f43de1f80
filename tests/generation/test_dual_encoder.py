"""The demo dual encoder learns, saves and loads, serves CLIPScore, and the committed checkpoint works."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from analysis import metrics
from generation import demo_domain
from generation.dual_encoder.checkpoint import (
    clip_model_and_processor,
    is_dual_encoder_dir,
    load_dual_encoder,
    save_dual_encoder,
)
from generation.dual_encoder.data import ALL_KINDS, HardNegatives, StateCache, attributes, make_batch
from generation.dual_encoder.evaluation import retrieval_report
from generation.dual_encoder.model import DualEncoder, DualEncoderConfig
from generation.dual_encoder.train import contrastive_loss

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "demo_models" / "clip-demo"
TINY = DualEncoderConfig(channels=(8, 16, 16, 16), image_hidden=32, width=32, text_layers=1, heads=2, embed_dim=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def minilm():
    from generation.text import load_text_encoder

    return load_text_encoder("minilm")


def test_a_few_steps_lower_the_contrastive_loss(minilm):
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(0)
    negatives = HardNegatives("train")
    x, texts, positives = make_batch(24, rng, negatives, TINY.image_size)
    cache = StateCache(minilm, texts)
    states, mask = cache.batch(texts)
    model = DualEncoder(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = contrastive_loss(
            model.get_image_features(x), model.text_features_from_states(states, mask), positives, model.logit_scale
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_hard_negatives_differ_in_exactly_one_attribute():
    negatives = HardNegatives("all")
    for spec in demo_domain.all_specs("heldout")[::25]:
        options = negatives.neighbours(spec)
        assert options
        for other in options:
            mine, theirs = attributes(spec), attributes(other)
            assert other.kind == spec.kind
            assert sum(mine[k] != theirs[k] for k in mine) == 1


def test_contrastive_loss_treats_repeated_captions_as_positives():
    emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    texts = torch.cat([emb, emb[:1]])  # the fourth text repeats the first caption
    positives = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    loss = contrastive_loss(emb, texts, positives, torch.tensor(np.log(100.0)))
    assert loss.item() < 0.05  # perfectly aligned: the duplicate is not punished as a negative


def test_saved_model_serves_clipscore_through_the_callable_route(tmp_path, minilm):
    torch.manual_seed(1)
    model = DualEncoder(TINY)
    save_dual_encoder(model, tmp_path, report={"note": "untrained"})
    assert is_dual_encoder_dir(tmp_path) and not is_dual_encoder_dir(tmp_path / "nothing")
    loaded, processor = load_dual_encoder(tmp_path)
    for key, value in model.trained_state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    images, captions, _ = demo_domain.sample_batch(6, np.random.default_rng(3), "heldout", ALL_KINDS)
    batch = processor(text=captions, images=list(torch.from_numpy(images).permute(0, 3, 1, 2)), return_tensors="pt")
    with torch.no_grad():
        img = loaded.get_image_features(batch["pixel_values"])
        txt = loaded.get_text_features(batch["input_ids"], batch["attention_mask"])
    expected = max(float(100 * torch.nn.functional.cosine_similarity(img, txt).mean()), 0.0)
    score = metrics.clip_score(images, captions, clip_model_and_processor(tmp_path))
    assert score == pytest.approx(expected, abs=1e-3)

    # the processor takes the image types CLIPProcessor takes, and never rescales twice
    one = images[0]
    as_uint8 = processor(images=[torch.from_numpy(one).permute(2, 0, 1)])["pixel_values"]
    for other in (one, PILImage.fromarray(one), torch.from_numpy(one).permute(2, 0, 1).float() / 255):
        assert torch.allclose(processor(images=[other])["pixel_values"], as_uint8, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        processor(images=[torch.from_numpy(one).permute(2, 0, 1).float()])
    with pytest.raises(FileNotFoundError):
        load_dual_encoder(tmp_path / "missing")


@pytest.mark.slow
def test_committed_checkpoint_ranks_matching_captions_higher_on_heldout_prompts():
    assert (CHECKPOINT / "model.safetensors").stat().st_size < 25 * 2**20
    model, processor = load_dual_encoder(CHECKPOINT)

    def text_features(captions):
        batch = processor(text=captions)
        with torch.no_grad():
            return model.get_text_features(batch["input_ids"], batch["attention_mask"])

    report = retrieval_report(model, text_features, "heldout", seed=5, max_prompts_per_kind=40)
    kinds = report["kinds"]
    # an image's own caption against a random other held-out caption (chance 50%)
    assert report["beats_random_caption"] >= 0.98, report
    # ... against every caption that changes one attribute (a colour, the shape, the relation, the word)
    assert report["beats_one_attribute_change"] >= 0.95, report
    # top-1 among the kind's sampled captions (chance: 1/14 shapes, 1/40 positions, 1/36 words)
    for kind in ("shape", "position", "word"):
        assert kinds[kind]["top1_accuracy"] >= 0.8, kinds[kind]
