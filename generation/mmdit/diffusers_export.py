"""The in-house MM-DiT's weights in diffusers' SD3Transformer2DModel, which then computes the same function.

    dm = to_diffusers(model)   # tests/generation/test_mmdit.py checks that dm and model agree

diffusers names and orders some tensors differently: fused q/k/v are split, the final layer's (shift, scale)
rows become (scale, shift), and the last block's text queries (which diffusers computes and then drops) get
identity norms.
"""

from __future__ import annotations

import torch

from generation.mmdit.model import MMDiT, MMDiTConfig


def diffusers_config(config: MMDiTConfig) -> dict:
    """Arguments of diffusers' SD3Transformer2DModel for the same architecture."""
    if config.mlp_ratio != 4.0:
        raise ValueError("diffusers' SD3Transformer2DModel has a fixed MLP ratio of 4")
    if config.frequency_embedding_size != 256 or config.norm_eps != 1e-6:
        raise ValueError("diffusers' SD3Transformer2DModel needs frequency_embedding_size 256, norm_eps 1e-6")
    return {
        "sample_size": config.sample_size,
        "patch_size": config.patch_size,
        "in_channels": config.in_channels,
        "num_layers": config.depth,
        "attention_head_dim": config.head_dim,
        "num_attention_heads": config.num_heads,
        "joint_attention_dim": config.text_dim,
        "caption_projection_dim": config.hidden_size,
        "pooled_projection_dim": config.pooled_dim,
        "out_channels": config.out_channels,
        "pos_embed_max_size": config.pos_embed_max_size,
        "dual_attention_layers": (),
        "qk_norm": "rms_norm" if config.qk_norm == "rms" else None,
    }


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    """(shift, scale) rows -> (scale, shift) rows, the order of diffusers' AdaLayerNormContinuous."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def diffusers_state_dict(model: MMDiT) -> dict[str, torch.Tensor]:
    """The in-house weights under diffusers' SD3Transformer2DModel names."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {
        "pos_embed.proj.weight": sd["patch_embed.proj.weight"],
        "pos_embed.proj.bias": sd["patch_embed.proj.bias"],
        "pos_embed.pos_embed": sd["patch_embed.pos_embed"][None],
        "context_embedder.weight": sd["context_embedder.weight"],
        "context_embedder.bias": sd["context_embedder.bias"],
        "norm_out.linear.weight": _swap_halves(sd["final_layer.adaLN.weight"]),
        "norm_out.linear.bias": _swap_halves(sd["final_layer.adaLN.bias"]),
        "proj_out.weight": sd["final_layer.linear.weight"],
        "proj_out.bias": sd["final_layer.linear.bias"],
    }
    for ours, theirs in [("t_embedder", "timestep_embedder"), ("pooled_embedder", "text_embedder")]:
        for i, j in [(0, 1), (2, 2)]:
            for p in ("weight", "bias"):
                out[f"time_text_embed.{theirs}.linear_{j}.{p}"] = sd[f"{ours}.mlp.{i}.{p}"]
    for n, block in enumerate(model.blocks):
        a, b = f"blocks.{n}.", f"transformer_blocks.{n}."
        for p in ("weight", "bias"):
            out[b + f"norm1.linear.{p}"] = sd[a + f"img_mod.{p}"]
            txt_mod = sd[a + f"txt_mod.{p}"]
            if block.context_pre_only:
                txt_mod = _swap_halves(txt_mod)  # AdaLayerNormContinuous: (scale, shift)
            out[b + f"norm1_context.linear.{p}"] = txt_mod
            for ours, names in [
                ("img_qkv", ("to_q", "to_k", "to_v")),
                ("txt_qkv", ("add_q_proj", "add_k_proj", "add_v_proj")),
            ]:
                for name, part in zip(names, sd[a + f"attn.{ours}.{p}"].chunk(3, dim=0), strict=True):
                    out[b + f"attn.{name}.{p}"] = part
            out[b + f"attn.to_out.0.{p}"] = sd[a + f"attn.img_out.{p}"]
            out[b + f"ff.net.0.proj.{p}"] = sd[a + f"img_mlp.fc1.{p}"]
            out[b + f"ff.net.2.{p}"] = sd[a + f"img_mlp.fc2.{p}"]
            if not block.context_pre_only:
                out[b + f"attn.to_add_out.{p}"] = sd[a + f"attn.txt_out.{p}"]
                out[b + f"ff_context.net.0.proj.{p}"] = sd[a + f"txt_mlp.fc1.{p}"]
                out[b + f"ff_context.net.2.{p}"] = sd[a + f"txt_mlp.fc2.{p}"]
        if model.config.qk_norm == "rms":
            for ours, theirs in [
                ("img_q_norm", "norm_q"),
                ("img_k_norm", "norm_k"),
                ("txt_q_norm", "norm_added_q"),
                ("txt_k_norm", "norm_added_k"),
            ]:
                if block.context_pre_only and ours == "txt_q_norm":
                    # diffusers computes text queries in the last block and then drops their output
                    out[b + f"attn.{theirs}.weight"] = torch.ones_like(sd[a + "attn.txt_k_norm.weight"])
                else:
                    out[b + f"attn.{theirs}.weight"] = sd[a + f"attn.{ours}.weight"]
    return out


def to_diffusers(model: MMDiT):
    """A diffusers SD3Transformer2DModel with this model's weights, on its device and dtype.

    Call it as `out = dm(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
    timestep=t * config.timestep_scale).sample`; it gives what `model(x, t, context, pooled)` gives
    (diffusers' attention takes no text mask)."""
    # diffusers.models, not diffusers: mypy reads the top-level name as its torch-less dummy class
    from diffusers.models import SD3Transformer2DModel

    param = next(model.parameters())
    with torch.device(param.device):  # build it where the weights live (an SD3-size model on the GPU)
        dm = SD3Transformer2DModel(**diffusers_config(model.config))
    dm.load_state_dict(diffusers_state_dict(model), strict=True)
    dm.to(param.device)
    if param.dtype != torch.float32:
        dm.to(param.dtype)
    return dm.eval()
