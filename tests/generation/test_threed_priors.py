"""The prior adapters against real (tiny, randomly initialised) models: the in-house MM-DiT and a diffusers
Stable Diffusion pipeline built here (no downloads). Guidance, shapes and one optimisation step through each."""

from __future__ import annotations

import string

import pytest
import torch

from generation.threed import DiffusersPrior, InHousePrior, Prior, UNetBaselinePrior, generate_asset, load_prior
from generation.threed.sds import SDSSettings, sds_loss
from tests.generation.threed_support import small_settings
from tests.support import (
    tiny_clip_text,
    tiny_inhouse_checkpoint,
    tiny_sd3_transformer,
    tiny_sd3_vae,
    tiny_sd_unet,
    tiny_unet_checkpoint,
    tiny_vae,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inhouse_prior(tmp_path_factory):
    path = tiny_inhouse_checkpoint(tmp_path_factory.mktemp("tiny-inhouse"))
    return InHousePrior.from_checkpoint(path)


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + " ":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_sd_pipeline(prediction_type: str = "epsilon"):
    """A StableDiffusionPipeline (UNet on 8x8 latents, 2x VAE, CLIP text, DDIM) with random weights."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer()
    unet = tiny_sd_unet()
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", clip_sample=False, steps_offset=1, prediction_type=prediction_type
    )
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(4),
        text_encoder=tiny_clip_text(CLIPTextModel, len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd3_pipeline():
    """A StableDiffusion3Pipeline (SD3 transformer on 8x8 latents, 16-channel VAE, two CLIPs, no T5)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer = clip_tokenizer()
    transformer = tiny_sd3_transformer()
    with torch.no_grad():  # adaLN-Zero starts at zero: randomise so that the prediction depends on the prompt
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    text = [tiny_clip_text(CLIPTextModelWithProjection, len(tokenizer), projection_dim=32) for _ in range(2)]
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_sd3_vae(),
        text_encoder=text[0],
        tokenizer=tokenizer,
        text_encoder_2=text[1],
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def check_guidance(prior: Prior, z: torch.Tensor, t: torch.Tensor, text) -> None:
    """The guided prediction is uncond + w (cond - uncond): w = 0 and 1 give the two, w = 3 extrapolates."""
    uncond, cond = prior.predict(z, t, text, 0.0), prior.predict(z, t, text, 1.0)
    assert not torch.allclose(uncond, cond)  # the prompt matters
    torch.testing.assert_close(prior.predict(z, t, text, 3.0), uncond + 3 * (cond - uncond), atol=1e-4, rtol=1e-4)


def test_the_inhouse_prior_guides_its_velocity_like_its_sampler(inhouse_prior):
    assert isinstance(inhouse_prior, Prior)
    assert (inhouse_prior.prediction, inhouse_prior.image_size, inhouse_prior.alphas_cumprod) == ("velocity", 16, None)
    text = inhouse_prior.encode_prompt("a red circle on a blue background")
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    check_guidance(inhouse_prior, z, torch.tensor([0.3, 0.8]), text)


def test_the_inhouse_prior_optimises_a_field(inhouse_prior):
    asset = generate_asset(inhouse_prior, "a red circle on a blue background", 0, small_settings(steps=2, size=16))
    assert asset.steps_done == 2 and asset.settings.render.image_size == 16


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_diffusers_unet_pipeline_is_an_eps_prior_through_its_vae(prediction_type):
    prior = DiffusersPrior(tiny_sd_pipeline(prediction_type))
    assert isinstance(prior, Prior)
    assert (prior.prediction, prior.image_size, len(prior.alphas_cumprod)) == ("eps", 16, 1000)
    text = prior.encode_prompt("a red circle")
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_()
    latents = prior.encode_images(rgb)
    assert latents.shape == (2, 4, 8, 8)
    check_guidance(prior, latents.detach(), torch.tensor([100, 700]), text)
    loss = sds_loss(prior, rgb, text, SDSSettings(guidance_scale=7.5), torch.Generator().manual_seed(0))
    loss.backward()  # through the VAE encoder to the render, never into the prior
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0 and torch.isfinite(rgb.grad).all()
    assert all(p.grad is None for p in prior.denoiser.parameters())
    asset = generate_asset(prior, "a red circle", 0, small_settings(steps=1, size=16))
    assert asset.steps_done == 1


def test_a_diffusers_transformer_pipeline_is_a_velocity_prior():
    prior = DiffusersPrior(tiny_sd3_pipeline())
    assert (prior.prediction, prior.image_size, prior.alphas_cumprod) == ("velocity", 16, None)
    text = prior.encode_prompt("a red circle")
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_()
    latents = prior.encode_images(rgb)
    assert latents.shape == (2, 16, 8, 8)
    check_guidance(prior, latents.detach(), torch.tensor([0.2, 0.9]), text)
    sds_loss(prior, rgb, text, SDSSettings(), torch.Generator().manual_seed(0)).backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0 and torch.isfinite(rgb.grad).all()


def test_an_eps_inhouse_checkpoint_is_an_eps_prior_on_its_training_schedule(tmp_path):
    from generation.mmdit.checkpoint import save_checkpoint
    from generation.mmdit.model import MMDiT, MMDiTConfig

    torch.manual_seed(0)
    model = MMDiT(
        MMDiTConfig(
            in_channels=3,
            sample_size=16,
            patch_size=4,
            depth=1,
            hidden_size=32,
            num_heads=2,
            text_dim=384,
            pooled_dim=384,
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    recipe = {"objective": "eps/linear", "text_encoder": "minilm", "image_size": 16}
    prior = InHousePrior.from_checkpoint(save_checkpoint(model, recipe, tmp_path / "eps"))
    assert prior.prediction == "eps" and len(prior.alphas_cumprod) == 1000
    text = prior.encode_prompt("a red circle on a blue background")
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    n = torch.tensor([100, 900])
    check_guidance(prior, z, n, text)
    # the model is given t = n / N, as the eps sampler gives it
    cond = {k: v.expand(2, *v.shape[1:]) for k, v in text[0].items()}
    torch.testing.assert_close(prior.predict(z, n, text, 1.0), model(z, n / 1000, **cond).float())


def test_a_registered_diffusers_model_becomes_a_prior_through_its_backend(tmp_path):
    """What a platform model of kind "diffusers" loads (a saved pipeline directory) is usable as a prior."""
    from generation.backends import load_backend

    tiny_sd_pipeline().save_pretrained(tmp_path / "sd")
    prior = DiffusersPrior.from_backend(load_backend("diffusers", str(tmp_path / "sd")))
    asset = generate_asset(prior, "a red circle", 0, small_settings(steps=1, size=16))
    assert asset.steps_done == 1 and asset.settings.render.image_size == 16


def test_the_unet_baseline_is_an_eps_prior_given_the_integer_step(tmp_path):
    prior = load_prior("unet_baseline", str(tiny_unet_checkpoint(tmp_path / "unet")))
    assert isinstance(prior, UNetBaselinePrior) and isinstance(prior, Prior)
    assert prior.prediction == "eps" and len(prior.alphas_cumprod) == 1000
    text = prior.encode_prompt("a red circle on a blue background")
    z = torch.randn(2, 3, prior.image_size, prior.image_size, generator=torch.Generator().manual_seed(0))
    n = torch.tensor([100, 900])
    check_guidance(prior, z, n, text)
    cond = {k: v.expand(2, *v.shape[1:]) for k, v in text[0].items()}
    torch.testing.assert_close(prior.predict(z, n, text, 1.0), prior.model(z, n, **cond).float())


def test_load_prior_knows_the_generating_kinds_only(tmp_path):
    assert isinstance(load_prior("inhouse", str(tiny_inhouse_checkpoint(tmp_path / "mmdit"))), InHousePrior)
    with pytest.raises(ValueError, match="no 3D prior for model kind 'external'"):
        load_prior("external", "anything")
