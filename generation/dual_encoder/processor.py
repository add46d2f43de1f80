"""Inputs of the dual encoder, prepared as transformers' CLIPProcessor prepares CLIP's: token ids from captions,
(B, 3, S, S) floats in [-1, 1] from images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class DualEncoderProcessor:
    """Turns captions into token ids and images into (B, 3, S, S) floats in [-1, 1], like CLIPProcessor.

    Images may be uint8 tensors (C, H, W) or (B, C, H, W), float tensors in [0, 1], numpy uint8 (H, W, 3)
    arrays or PIL images. Float images are taken as already scaled to [0, 1] (never rescaled twice)."""

    def __init__(self, tokenizer, image_size: int = 32, max_tokens: int = 64):
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.max_tokens = max_tokens

    def __call__(self, text=None, images=None, return_tensors: str = "pt", padding=True, **kwargs) -> dict:
        if return_tensors != "pt":
            raise ValueError("DualEncoderProcessor only returns PyTorch tensors (return_tensors='pt')")
        if text is None and images is None:
            raise ValueError("give text, images or both")
        out: dict[str, torch.Tensor] = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not all(isinstance(t, str) for t in texts):
                raise TypeError("text must be a string or a list of strings")
            batch = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            out["input_ids"], out["attention_mask"] = batch["input_ids"], batch["attention_mask"]
        if images is not None:
            out["pixel_values"] = self.pixel_values(images)
        return out

    def pixel_values(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            batch = [img for img in images]
        elif isinstance(images, (torch.Tensor, np.ndarray)) and getattr(images, "ndim", 0) == 3:
            batch = [images]
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            batch = [img for img in images]
        else:
            batch = list(images)
        if not batch:
            raise ValueError("no images given")
        tensors = [self._to_chw_unit(img) for img in batch]
        x = torch.stack([self._resize(t) for t in tensors])  # (B, 3, S, S) in [0, 1]
        return x * 2.0 - 1.0

    @staticmethod
    def _to_chw_unit(img) -> torch.Tensor:
        if not isinstance(img, (torch.Tensor, np.ndarray)):
            img = np.array(img.convert("RGB"))  # PIL image (a writable copy)
        if isinstance(img, np.ndarray):
            if img.ndim != 3 or img.shape[-1] not in (3, 4):
                raise ValueError(f"numpy images must be (H, W, 3), got shape {img.shape}")
            img = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"image tensors must be (3, H, W), got shape {tuple(img.shape)}")
        if img.dtype == torch.uint8:
            return img.float() / 255.0
        img = img.float()
        if img.min() < -1e-3 or img.max() > 1.0 + 1e-3:
            raise ValueError("float images must hold values in [0, 1]; pass uint8 for 0-255 pixels")
        return img

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2:] == (self.image_size, self.image_size):
            return img
        return F.interpolate(
            img[None], size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
        )[0]
