"""The in-house MM-DiT (the SD3 architecture), trained with rectified flow on the demo domain.

Files:

    model.py             MMDiTConfig and the network, one nn.Module per part, shapes in comments
    checkpoint.py        save_checkpoint / load_mmdit: model.safetensors + config.json with the training recipe
    diffusers_export.py  to_diffusers: the same weights in diffusers' SD3Transformer2DModel
    pipeline.py          InHousePipeline: prompts + seeds -> images (the sampler: generation.sampling);
                         ImageSpace: pixels, or the latents of a VAE
    train.py             the training command, `python -m generation.mmdit.train`
    benchmarking.py      what the speed benchmarks in bench/ share: model sizes, FLOP count, timers

Use:

    pipe = InHousePipeline.from_checkpoint("demo_models/mmdit-demo", device="cpu")
    images = pipe(["a red circle on a blue background"], seeds=[0], steps=28, guidance_scale=4.0, shift=1.0)
"""
