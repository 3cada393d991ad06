"""Prompt conditioning for the standalone UNets: token embeddings, plus SDXL's added conditioning.

SDXL conditions its UNet on two CLIP encoders' penultimate hidden states (concatenated), the second
encoder's pooled projection, and six size/crop ids (original size, crop corner, target size), the
way diffusers' ``StableDiffusionXLPipeline`` builds them. Every frame of a clip gets its clip's
conditioning, in T2I and T2V passes alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextConditioning:
    """One prompt per clip: ``context`` [G, seq, dim]; for SDXL ``pooled`` [G, dim] and ``time_ids`` [G, 6].
    With prompt travel a clip has a row per frame instead (G·F rows)."""

    context: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    @classmethod
    def of(cls, value) -> "TextConditioning":
        """A bare context tensor (SD1.x, UNet3D) as conditioning; conditioning unchanged."""
        return value if isinstance(value, cls) else cls(value)

    @classmethod
    def cat(cls, parts) -> "TextConditioning":
        def joined(name):
            values = [getattr(part, name) for part in parts]
            return None if values[0] is None else torch.cat(values)

        return cls(joined("context"), joined("pooled"), joined("time_ids"))

    def map(self, function) -> "TextConditioning":
        """``function`` applied to every tensor present (context, pooled, time ids)."""
        return TextConditioning(*(None if t is None else function(t) for t in (self.context, self.pooled, self.time_ids)))

    def to(self, dtype: torch.dtype) -> "TextConditioning":
        return self.map(lambda tensor: tensor.to(dtype))

    @property
    def rows(self) -> int:
        return self.context.shape[0]

    def repeated(self, frames: int) -> "TextConditioning":
        """Every row repeated for ``frames`` frames (G clips → G·F frame rows)."""
        return self.map(lambda tensor: tensor.repeat_interleave(frames, dim=0))

    def take(self, index) -> "TextConditioning":
        return self.map(lambda tensor: tensor[index])

    def unet_kwargs(self) -> dict:
        """UNet keyword arguments for a batch with one conditioning row per batch item."""
        added = {} if self.pooled is None else self.added_cond_kwargs()
        return {"encoder_hidden_states": self.context, **added}

    def sized(self, width: int, height: int) -> "TextConditioning":
        """With SDXL's size/crop ids for an uncropped ``width``×``height`` image (no-op without a pooled embedding)."""
        if self.pooled is None:
            return self
        ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=self.pooled.dtype, device=self.pooled.device)
        return TextConditioning(self.context, self.pooled, ids.expand(self.pooled.shape[0], -1))

    def added_cond_kwargs(self, repeats: int = 1) -> dict:
        """diffusers' ``added_cond_kwargs`` (empty for SD1.x), each row repeated ``repeats`` times."""
        if self.pooled is None:
            return {}
        if self.time_ids is None:
            raise ValueError("SDXL conditioning needs its size/crop ids: call sized(width, height) first")
        return {"added_cond_kwargs": {"text_embeds": self.pooled.repeat_interleave(repeats, dim=0),
                                      "time_ids": self.time_ids.repeat_interleave(repeats, dim=0)}}

    def per_frame(self, frames: int) -> dict:
        """UNet keyword arguments with every clip's conditioning repeated for its ``frames`` frames."""
        return self.repeated(frames).unet_kwargs()


@dataclass
class SDXLTextEncoder:
    """SDXL's two CLIP text encoders (the second with projection) → ``TextConditioning`` without size ids."""

    tokenizers: tuple
    models: tuple

    @torch.no_grad()
    def __call__(self, prompt: str) -> TextConditioning:
        hidden, pooled = [], None
        for tokenizer, model in zip(self.tokenizers, self.models):
            ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            out = model(ids.to(model.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's projected pooled embedding
        return TextConditioning(torch.cat(hidden, dim=-1), pooled)

    @property
    def model(self):
        """The encoder to move with the pipeline (both, as one module list)."""
        return torch.nn.ModuleList(self.models)
