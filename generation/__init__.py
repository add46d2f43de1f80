"""Image models and everything around them: PyTorch and diffusers, no Django (the site calls in, never back).

Where things live:

    contract.py       what the web side and the model side agree on (model kinds, setting keys, checkpoint
                      format tags, the Celery task name); torch-free, so the web process can import it
    backends.py       one interface over the three kinds of model the platform compares (load, generate,
                      per-worker cache, out-of-memory halving, PNG bytes)
    mmdit/            the in-house MM-DiT: model, checkpoint, pipeline, training command
    unet/             the UNet eps-prediction baseline: model, checkpoint, pipeline, training command
    dual_encoder/     the small CLIP-style model behind CLIP score and FID on the demo domain
    sampling.py       the sampling loops (Euler for rectified flow; DDIM, DDPM for eps-prediction) with
                      classifier-free guidance, behind one entry: `sample(..., settings=SamplerSettings(...))`
    flow.py           training objectives: rectified flow with its timestep densities, eps-prediction schedules
    training.py       what every trainer shares: learning-rate schedule, EMA, threads, time budget, versions
    text.py           text encoders (MiniLM, CLIP, T5 from local files) and the helpers training needs
    checkpoint_io.py  writing and reading checkpoint directories (model.safetensors + config.json)
    demo_domain.py    the demo domain: procedurally drawn captioned images with checkable content
    checker.py        reads a demo image's content back from its pixels
    demo_judge.py     graded scores of a demo image on each rating question (what a simulated rater sees)
"""
