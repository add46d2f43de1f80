"""The UNet baseline (the SD3 paper's "LDM"): diffusers' UNet2DConditionModel with eps-prediction on LDM's
scaled-linear DDPM schedule, trained here on the demo domain with the MM-DiT's text encoder.

    model.py       UNetBaselineConfig, UNetBaseline (space-to-depth + the UNet), `unet_config` for a size
    checkpoint.py  save / load a checkpoint directory (model.safetensors + config.json)
    pipeline.py    UNetBaselinePipeline: prompts + seeds -> images (DDIM or DDPM, by generation.sampling)
    train.py       the training command, `python -m generation.unet.train`

    pipe = UNetBaselinePipeline.from_checkpoint("demo_models/unet-baseline", device="cpu")
    images = pipe(["a red circle on a blue background"], seeds=[0], steps=28, guidance_scale=4.0)
"""
