"""Text encoders: the real MiniLM offline, tiny CLIP/T5 from a local directory, the cache and the dropout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from generation.text import (
    CachedTextEncoder,
    drop_conditioning,
    load_text_encoder,
    masked_mean,
    minilm_path,
    save_tiny_text_encoder,
)

PROMPTS = ["a red circle on a blue background", 'the word "CAT" in red letters on a white background', ""]


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def assert_well_formed(encoder, tokens, mask, pooled, batch):
    assert tokens.dtype == torch.float32 and mask.dtype == torch.bool
    assert tokens.shape[0] == mask.shape[0] == pooled.shape[0] == batch
    assert tokens.shape[2] == encoder.dim and pooled.shape[1] == encoder.pooled_dim
    assert tokens.shape[:2] == mask.shape
    assert (tokens[~mask] == 0).all()  # padding is zeroed
    lengths = mask.sum(1)
    assert lengths[0] < lengths[1] and lengths[2] >= 1  # longer prompt, more tokens; "" still has specials
    assert not torch.allclose(pooled[0], pooled[1])


def test_real_minilm_loads_from_the_pypi_package(minilm):
    assert (minilm_path() / "model.safetensors").is_file()
    assert (minilm.dim, minilm.pooled_dim) == (384, 384)
    tokens, mask, pooled = minilm.encode(PROMPTS)
    assert_well_formed(minilm, tokens, mask, pooled, 3)
    assert torch.allclose(pooled, masked_mean(tokens, mask), atol=1e-6)  # pooled = masked mean of the states
    # a pretrained encoder puts related prompts closer than unrelated ones
    a, b, c = minilm.encode(["a red circle on a blue background", "a red circle on a green background", "the word HI"])[
        2
    ]
    cos = torch.nn.functional.cosine_similarity
    assert cos(a, b, dim=0) > cos(a, c, dim=0)


@pytest.mark.parametrize("family", ["clip", "t5"])
def test_tiny_clip_and_t5_load_from_a_local_directory(tmp_path, family):
    name = save_tiny_text_encoder(tmp_path / family, family)
    encoder = load_text_encoder(name)
    assert encoder.name == f"{family}:{tmp_path / family}"
    tokens, mask, pooled = encoder.encode(PROMPTS)
    assert_well_formed(encoder, tokens, mask, pooled, 3)
    assert encoder.pooled_dim == (16 if family == "clip" else 32)  # CLIP: projected embedding width
    again = load_text_encoder(name).encode(PROMPTS)
    assert torch.equal(again[0], tokens)  # same files, same states


def test_cache_encodes_each_prompt_once_and_matches_the_encoder(minilm):
    cached = CachedTextEncoder(minilm)
    tokens, mask, pooled = cached.encode(PROMPTS + PROMPTS[:1])
    assert len(cached) == 3
    ref_tokens, ref_mask, ref_pooled = minilm.encode(PROMPTS)
    assert torch.equal(mask[:3], ref_mask[:, : mask.shape[1]])
    assert torch.allclose(tokens[:3], ref_tokens[:, : tokens.shape[1]], atol=1e-4)
    assert torch.allclose(pooled[:3], ref_pooled, atol=1e-4)
    assert torch.equal(pooled[3], pooled[0])


def test_warming_the_cache_in_batches_gives_what_one_at_a_time_gives(minilm):
    one_by_one, warmed = CachedTextEncoder(minilm), CachedTextEncoder(minilm)
    warmed.warm(PROMPTS, batch_size=2)  # the short prompt is padded beside the long one
    assert len(warmed) == 3
    for p in PROMPTS:
        a, b = one_by_one.encode([p]), warmed.encode([p])
        assert a[0].shape == b[0].shape and torch.equal(a[1], b[1])
        assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[2], b[2], atol=1e-5)
    warmed.warm(PROMPTS)  # nothing left to encode
    assert len(warmed) == 3


def test_text_encoder_dropout_swaps_rows_for_the_empty_prompt(minilm):
    cached = CachedTextEncoder(minilm)
    enc, empty = cached.encode(PROMPTS[:2] * 50), cached.encode([""])
    kept = drop_conditioning(enc, empty, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(kept, enc, strict=True))
    tokens, mask, pooled = drop_conditioning(enc, empty, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(pooled, empty[2].expand_as(pooled)) and (mask.sum(1) == empty[1].sum()).all()
    tokens, mask, pooled = drop_conditioning(enc, empty, 0.3, torch.Generator().manual_seed(0))
    dropped = (pooled == empty[2]).all(1)
    assert 15 <= int(dropped.sum()) <= 45  # about 30 of 100
    assert torch.equal(pooled[~dropped], enc[2][~dropped])
    again = drop_conditioning(enc, empty, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(again[2], pooled)  # seeded


def test_bad_encoder_names_and_paths_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown text encoder"):
        load_text_encoder("bert-base")
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        load_text_encoder(f"clip:{tmp_path}")
    with pytest.raises(TypeError):
        CachedTextEncoder(load_text_encoder(save_tiny_text_encoder(tmp_path / "t", "t5"))).encode("one string")


NO_NETWORK = """
import json, socket, sys

attempts = []


def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args))
    raise OSError("this test allows no network connection")


socket.socket.connect = refuse
socket.create_connection = refuse

from generation.backends import ModelLoadError, load_backend
from generation.text import load_text_encoder

shapes = [tuple(load_text_encoder(name).encode(["a red circle"])[0].shape) for name in sys.argv[1:]]
try:
    load_backend("diffusers", "t2i-arena-tests/no-such-pipeline")
    hub = "loaded"
except ModelLoadError as e:
    hub = str(e)
print(json.dumps({"shapes": shapes, "hub": hub, "attempts": attempts}))
"""


def test_nothing_reaches_a_hub_even_without_the_offline_flags(tmp_path):
    """The guarantee is in the loading code (local directories, local_files_only), not in an environment variable:
    with HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE unset and every connection refused, MiniLM and a local CLIP
    load and encode, and a diffusers hub id that is not in the cache fails without trying the network."""
    clip = save_tiny_text_encoder(tmp_path / "clip", "clip")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: the hub id cannot be there
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, "minilm", clip],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert [shape[2] for shape in result["shapes"]] == [384, 32]
    assert "cannot load diffusers model from t2i-arena-tests/no-such-pipeline" in result["hub"]
