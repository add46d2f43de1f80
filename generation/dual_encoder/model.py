"""The dual encoder's networks: an image tower (a small CNN) and a text head over frozen MiniLM token states,
both ending in one shared embedding space.

    image (B, 3, 32, 32) -> ImageTower (small CNN)                         -> (B, E) image embedding
    prompt -> MiniLM token states (frozen, 384-d) -> TextHead (transformer) -> (B, E) text embedding
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class DualEncoderConfig:
    image_size: int = 32  # images are resized to image_size x image_size before the image tower
    channels: tuple[int, ...] = (32, 64, 128, 128)  # conv widths; every stage after the first halves H and W
    image_hidden: int = 256  # width of the MLP after the flattened conv features
    text_model: str = "minilm"  # frozen text backbone, a `generation.text.load_text_encoder` name
    text_dim: int = 384  # width of the backbone's token states
    max_tokens: int = 64  # longest token sequence the text head accepts (longer prompts are truncated)
    width: int = 128  # width of the trainable text head
    text_layers: int = 2  # transformer layers in the text head
    heads: int = 4  # attention heads in the text head
    embed_dim: int = 64  # width of the shared image-text embedding space
    init_temperature: float = 0.07  # initial softmax temperature of the contrastive loss

    @classmethod
    def from_dict(cls, values: dict) -> DualEncoderConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown dual encoder config fields: {sorted(unknown)}")
        values = dict(values)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


class ImageTower(nn.Module):
    """(B, 3, S, S) float in [-1, 1] -> (B, E). Convolutions keep the layout (positions matter here)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(cfg.channels):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.GELU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** (len(cfg.channels) - 1)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, cfg.image_hidden),
            nn.GELU(),
            nn.Linear(cfg.image_hidden, cfg.embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.convs(x))  # (B, C, s, s) -> (B, E)


class TextHead(nn.Module):
    """Frozen backbone token states (B, T, text_dim) + mask (B, T) -> (B, E)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        self.proj_in = nn.Linear(cfg.text_dim, cfg.width)
        self.pos = nn.Parameter(torch.zeros(cfg.max_tokens, cfg.width))
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.proj_out = nn.Linear(cfg.width, cfg.embed_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = states.shape[1]
        x = self.proj_in(states.float()) + self.pos[:t]  # (B, T, W)
        x = self.blocks(x, src_key_padding_mask=~mask)  # (B, T, W)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (self.norm(x) * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, W)
        return self.proj_out(pooled)  # (B, E)


class DualEncoder(nn.Module):
    """Image tower + text head (+ the frozen text backbone, attached for inference by `load_dual_encoder`)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        self.config = cfg
        self.image_tower = ImageTower(cfg)
        self.text_head = TextHead(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        self.backbone: nn.Module | None = None  # MiniLM's transformers model; never saved with the checkpoint

    def attach_backbone(self, backbone: nn.Module) -> None:
        self.backbone = backbone.eval().requires_grad_(False)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [-1, 1], as `DualEncoderProcessor` makes it -> (B, E), not normalised."""
        return self.image_tower(pixel_values.to(self.logit_scale.device, torch.float32))

    def text_features_from_states(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = self.config.max_tokens
        return self.text_head(states[:, :n], mask[:, :n].bool())

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids from `DualEncoderProcessor` -> (B, E), not normalised."""
        if self.backbone is None:
            raise RuntimeError("no text backbone attached: load the model with load_dual_encoder(path)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_features_from_states(states, attention_mask.bool())

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("backbone.")}
