"""analysis.metrics against the real torchmetrics classes, with a tiny CLIP built here (no downloads)."""

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from analysis import metrics as m

transformers = pytest.importorskip("transformers")


def tiny_clip(seed: int = 0, shared_direction: bool = False):
    """A randomly initialised transformers CLIPModel and a CLIPProcessor whose tokenizer is built in memory.

    shared_direction: both towers' pooled outputs get the same large bias and the two projections the same
    weights, so every image-text pair has a clearly positive cosine (CLIPScore's mean is then not clamped)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    if shared_direction:
        with torch.no_grad():
            direction = torch.randn(32) * 5
            model.vision_model.post_layernorm.bias.copy_(direction)
            model.text_model.final_layer_norm.bias.copy_(direction)
            model.text_projection.weight.copy_(model.visual_projection.weight)
    return model, processor


def random_images(n: int, seed: int, low: int = 0, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


PROMPTS = ["a red cat", "a blue dog", "green sky", "the word hi"]


def manual_clip_score(model, processor, images, prompts) -> float:
    with torch.no_grad():
        pixels = processor(images=[i for i in images], return_tensors="pt")["pixel_values"]
        text = processor(text=prompts, return_tensors="pt", padding=True)
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"]).pooler_output
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    return max(float(100 * cos.mean()), 0.0)


def test_clip_score_uses_torchmetrics_with_a_callable_that_returns_model_and_processor():
    model, processor = tiny_clip(shared_direction=True)
    images = random_images(4, seed=1)
    calls = []

    def load():
        calls.append(1)
        return m.TensorFeatures(model), processor

    score = m.clip_score(images, PROMPTS, load, batch_size=3)
    assert calls == [1]
    expected = manual_clip_score(model, processor, images, PROMPTS)
    assert expected > 10  # the shared direction makes every pair clearly similar
    assert score == pytest.approx(expected, rel=1e-4)
    # numpy (N, H, W, 3) input gives the same value
    assert m.clip_score(images.permute(0, 2, 3, 1).numpy(), PROMPTS, load) == pytest.approx(score, rel=1e-5)


def test_clip_score_refuses_bad_input():
    model, processor = tiny_clip()
    pair = (m.TensorFeatures(model), processor)
    with pytest.raises(ValueError, match="uint8"):
        m.clip_score(random_images(2, 0).float() / 255, PROMPTS[:2], pair)
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        m.clip_score(random_images(2, 0), PROMPTS[:3], pair)
    with pytest.raises(ValueError, match="non-empty"):
        m.clip_score(random_images(2, 0), ["a cat", ""], pair)


def test_clip_from_directory_loads_a_saved_clip_offline(tmp_path):
    model, processor = tiny_clip(shared_direction=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    images = random_images(4, seed=2)
    expected = manual_clip_score(model, processor, images, PROMPTS)
    assert m.clip_score(images, PROMPTS, m.clip_from_directory(tmp_path)) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(FileNotFoundError):
        m.clip_from_directory(tmp_path / "missing")


def numpy_fid(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    mu1, mu2 = real_feats.mean(0), fake_feats.mean(0)
    s1, s2 = np.cov(real_feats, rowvar=False), np.cov(fake_feats, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_on_clip_features_matches_the_formula_and_separates_distributions():
    model, processor = tiny_clip(seed=3)
    features = m.ClipImageFeatures(m.TensorFeatures(model), processor)
    assert features.num_features == 16
    real = random_images(64, seed=4)
    fake_same = random_images(64, seed=5)
    fake_dark = random_images(64, seed=6, high=96)
    with torch.no_grad():
        f_real, f_same, f_dark = (features(x).double().numpy() for x in (real, fake_same, fake_dark))
    same, dark = m.fid(real, fake_same, features), m.fid(real, fake_dark, features)
    assert same == pytest.approx(numpy_fid(f_real, f_same), rel=1e-3, abs=1e-6)
    assert dark == pytest.approx(numpy_fid(f_real, f_dark), rel=1e-3)
    assert dark > 5 * same
    assert m.fid(real, real, features) == pytest.approx(0.0, abs=1e-4)
    assert m.fid_is_reliable(64, 64, features.num_features)
    assert not m.fid_is_reliable(10, 64, features.num_features)


def test_fid_refuses_too_few_images_and_modules_without_num_features():
    model, processor = tiny_clip()
    features = m.ClipImageFeatures(m.TensorFeatures(model), processor)
    with pytest.raises(ValueError, match="at least 2"):
        m.fid(random_images(1, 0), random_images(5, 1), features)
    with pytest.raises(ValueError, match="num_features"):
        m.fid(random_images(4, 0), random_images(4, 1), torch.nn.Flatten())


def test_inception_route_needs_a_local_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Inception weights"):
        m.inception_features(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    fake_weights = tmp_path / "weights.pth"
    fake_weights.write_bytes(b"not weights")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="torch-fidelity"):
            m.inception_features(fake_weights)
    else:  # torch-fidelity present: a corrupt weights file must fail loudly, not download
        with pytest.raises(Exception):  # noqa: B017
            m.inception_features(fake_weights)


def test_spearman_with_human_scores():
    human = {"a": 1100.0, "b": 1000.0, "c": 950.0, "d": 900.0}
    clip = {"a": 31.0, "b": 30.0, "c": 29.5, "d": 20.0, "unrated": 40.0}
    corr = m.spearman_with_human(clip, human, metric="clip_score")
    assert (corr.rho, corr.agreement, corr.n) == (pytest.approx(1.0), pytest.approx(1.0), 4)
    fid = {"a": 10.0, "b": 12.0, "c": 11.0, "d": 30.0}
    corr = m.spearman_with_human(fid, human, metric="fid", higher_is_better=False)
    assert corr.rho == pytest.approx(-0.8)
    assert corr.agreement == pytest.approx(0.8)
    few = m.spearman_with_human({"a": 1.0, "b": 2.0}, human)
    assert math.isnan(few.rho) and few.n == 2 and "at least 3" in few.note
    assert few.as_dict()["rho"] is None
    flat = m.spearman_with_human({"a": 1.0, "b": 1.0, "c": 1.0}, human)
    assert "same value" in flat.note
