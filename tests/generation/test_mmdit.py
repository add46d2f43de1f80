"""The in-house MM-DiT: shapes, structure, text dependence, diffusers fidelity and checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from generation.mmdit.checkpoint import load_mmdit, save_checkpoint
from generation.mmdit.diffusers_export import diffusers_config, to_diffusers
from generation.mmdit.model import MMDiT, MMDiTConfig

TINY = {
    "in_channels": 4,
    "sample_size": 16,
    "patch_size": 2,
    "depth": 3,
    "hidden_size": 64,
    "num_heads": 4,
    "text_dim": 24,
    "pooled_dim": 20,
    "pos_embed_max_size": 12,
}


def randomised_model(seed: int = 0, **overrides) -> MMDiT:
    """A tiny model whose every parameter (zero-initialised adaLN and output included) is random."""
    torch.manual_seed(seed)
    model = MMDiT(MMDiTConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))  # RMSNorm weights near 1
    return model.eval()


def inputs(batch=2, height=16, width=12, tokens=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, height, width, generator=g),
        torch.rand(batch, generator=g),
        torch.randn(batch, tokens, 24, generator=g),
        torch.randn(batch, 20, generator=g),
    )


def test_config_follows_the_paper_scaling_rule_and_round_trips_through_json():
    cfg = MMDiTConfig.from_depth(
        24, in_channels=16, sample_size=128, text_dim=4096, pooled_dim=2048, pos_embed_max_size=192
    )
    assert (cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.out_channels) == (1536, 24, 64, 16)
    assert MMDiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        MMDiTConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        MMDiTConfig(depth=2, hidden_size=64, num_heads=3)


def test_fresh_model_predicts_zero_because_adaln_zero_and_output_are_zero_initialised():
    torch.manual_seed(0)
    model = MMDiT(MMDiTConfig(**TINY))
    x, t, ctx, pooled = inputs()
    assert torch.count_nonzero(model(x, t, ctx, pooled)) == 0


def test_output_has_the_input_shape_for_non_square_and_other_sizes():
    model = randomised_model()
    for h, w in [(16, 12), (8, 8), (24, 24)]:
        x, t, ctx, pooled = inputs(height=h, width=w)
        assert model(x, t, ctx, pooled).shape == (2, 4, h, w)
    x, t, ctx, pooled = inputs()
    assert model(x, 0.5, ctx, pooled).shape == x.shape  # a scalar t applies to the whole batch


def test_bad_shapes_are_refused_with_a_clear_error():
    model = randomised_model()
    x, t, ctx, pooled = inputs()
    with pytest.raises(ValueError, match="context"):
        model(x, t, ctx[..., :10], pooled)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(x[..., :11], t, ctx, pooled)
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        model(torch.randn(2, 4, 32, 32), t, ctx, pooled)


def test_last_block_text_stream_has_no_outputs():
    model = randomised_model()
    last, first = model.blocks[-1], model.blocks[0]
    assert last.txt_mlp is None and last.attn.txt_out is None and last.attn.txt_q_norm is None
    assert last.txt_mod.out_features == 2 * 64  # shift and scale of the text attention input only
    assert first.txt_mod.out_features == 6 * 64 and first.txt_mlp is not None
    names = [n for n, _ in model.named_parameters() if n.startswith(f"blocks.{len(model.blocks) - 1}.")]
    assert not [n for n in names if "txt_mlp" in n or "txt_out" in n or "txt_q_norm" in n]


def test_every_parameter_receives_a_gradient():
    model = randomised_model()
    x, t, ctx, pooled = inputs()
    model(x, t, ctx, pooled).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert dead == []


def test_output_depends_on_the_text_tokens_the_pooled_text_and_the_timestep():
    model = randomised_model()
    x, t, ctx, pooled = inputs()
    with torch.no_grad():
        base = model(x, t, ctx, pooled)
        assert (model(x, t, ctx + torch.randn_like(ctx), pooled) - base).abs().max() > 1e-2
        assert (model(x, t, ctx, pooled + torch.randn_like(pooled)) - base).abs().max() > 1e-2
        assert (model(x, t.flip(0) * 0.5, ctx, pooled) - base).abs().max() > 1e-2


def test_masked_text_tokens_are_ignored():
    model = randomised_model()
    x, t, ctx, pooled = inputs(tokens=7)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 4:] = False
    garbage = ctx.clone()
    garbage[:, 4:] = torch.randn(2, 3, 24) * 10
    with torch.no_grad():
        short = model(x, t, ctx[:, :4], pooled)
        masked = model(x, t, garbage, pooled, context_mask=mask)
        unmasked = model(x, t, garbage, pooled)
    torch.testing.assert_close(masked, short, atol=1e-5, rtol=1e-5)
    assert (unmasked - short).abs().max() > 1e-2


def test_cpu_low_precision_attention_matches_the_float32_kernel_and_honours_the_mask():
    """bf16 inputs on the CPU take the written-out attention (bf16 products, float32 softmax)."""
    from generation.mmdit.model import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., 2:5] = False
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 3e-2
    poisoned = v.clone()
    poisoned[0, :, 2:5] = 1e4  # values of masked keys must not leak into the output
    assert torch.equal(attention(q.bfloat16(), k.bfloat16(), poisoned.bfloat16(), mask)[0], out[0])
    torch.testing.assert_close(attention(q, k, v, mask), reference)  # float32 keeps the fused kernel


def test_bf16_autocast_training_forward_stays_close_to_float32():
    model = randomised_model()
    x, t, ctx, pooled = inputs()
    with torch.no_grad():
        full = model(x, t, ctx, pooled)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t, ctx, pooled)
    assert (low.float() - full).abs().max() / full.abs().max() < 0.05


@pytest.mark.parametrize("qk_norm", ["rms", None])
def test_diffusers_sd3_transformer_with_the_same_weights_gives_the_same_output(qk_norm):
    model = randomised_model(qk_norm=qk_norm)
    reference = to_diffusers(model)
    x, t, ctx, pooled = inputs()
    with torch.no_grad():
        ours = model(x, t, ctx, pooled)
        theirs = reference(
            hidden_states=x,
            encoder_hidden_states=ctx,
            pooled_projections=pooled,
            timestep=t * model.config.timestep_scale,
        ).sample
    assert ours.abs().mean() > 0.1  # not trivially zero
    assert (ours - theirs).abs().max() <= 1e-4


def test_position_table_equals_the_one_diffusers_builds():
    from diffusers import SD3Transformer2DModel

    model = randomised_model()
    fresh = SD3Transformer2DModel(**diffusers_config(model.config))
    torch.testing.assert_close(model.patch_embed.pos_embed, fresh.pos_embed.pos_embed[0], atol=1e-6, rtol=0)


def test_checkpoint_round_trip_keeps_weights_config_and_recipe(tmp_path):
    model = randomised_model()
    save_checkpoint(model, {"objective": "rf/lognorm(0.00,1.00)", "steps": 12}, tmp_path / "ckpt")
    loaded, meta = load_mmdit(tmp_path / "ckpt")
    assert meta["recipe"] == {"objective": "rf/lognorm(0.00,1.00)", "steps": 12}
    assert loaded.config == model.config and not loaded.training
    x, t, ctx, pooled = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ctx, pooled), model(x, t, ctx, pooled))


def test_loading_a_missing_or_broken_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mmdit(tmp_path / "nowhere")
    directory = save_checkpoint(randomised_model(), {}, tmp_path / "ckpt")

    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        load_mmdit(directory)

    (directory / "config.json").write_text("{ broken")
    with pytest.raises(ValueError, match="JSON"):
        load_mmdit(directory)

    (directory / "model.safetensors").unlink()
    save_checkpoint(randomised_model(), {}, directory)
    meta = json.loads((directory / "config.json").read_text())
    meta["config"]["hidden_size"] = 128  # weights are for width 64
    (directory / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match"):
        load_mmdit(directory)

    meta["config"] = {**meta["config"], "hidden_size": 66}  # not divisible by its 4 heads
    (directory / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="bad MMDiT config"):
        load_mmdit(directory)

    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_mmdit(directory)


def test_recipe_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(randomised_model(), {"when": object()}, tmp_path / "ckpt")
