"""Stand-in for A1111 ``modules/sd_hijack_optimizations.py`` with a single optimization, "sdp" (torch's
``scaled_dot_product_attention``), written for these tests.

What matters for extensions is kept: A1111 applies the chosen cross-attention optimization by assigning
a new function to the *class attribute* ``ldm.modules.attention.CrossAttention.forward``, puts the
original back in ``undo``, and re-applies on every model (re)load and setting change. The replacement
keeps the ``(self, x, context=None, mask=None, **kwargs)`` contract: queries from ``x``, keys and values
from ``context``, or from ``x`` when it is ``None``. Attention masks are not supported.
"""
import torch.nn.functional as F

_original_forward = {}
"""``"ldm"`` → ``CrossAttention.forward`` as it was before the first ``apply``"""


def _cross_attention():
    import ldm.modules.attention
    return ldm.modules.attention.CrossAttention


class SdOptimization:
    """One choice of the "Cross attention optimization" setting; higher ``priority`` wins under "Automatic".
    Subclasses set ``name`` (the setting value), ``label`` (shown after it) and ``priority``."""

    name = label = None
    priority = 0

    def title(self):
        return self.name if self.label is None else f"{self.name} - {self.label}"

    def apply(self):
        """Install this implementation (the base class installs nothing)."""

    def undo(self):
        attention = _cross_attention()
        attention.forward = _original_forward.get("ldm", attention.forward)

    def is_available(self):
        return True


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    """``CrossAttention.forward`` computed with ``torch.nn.functional.scaled_dot_product_attention``."""
    if mask is not None:
        raise NotImplementedError("attention masks are not used by SD1 and not supported by the stand-in")
    source = x if context is None else context

    def by_head(tensor):  # [batch, tokens, heads·dim] → [batch, heads, tokens, dim]
        return tensor.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    query = by_head(self.to_q(x))
    attended = F.scaled_dot_product_attention(query, by_head(self.to_k(source)), by_head(self.to_v(source)))
    merged = attended.transpose(1, 2).flatten(2).to(query.dtype)
    return self.to_out(merged)  # projection, then dropout


class SdOptimizationSdp(SdOptimization):
    name, label, priority = "sdp", "scaled dot product", 70

    def apply(self):
        attention = _cross_attention()
        _original_forward.setdefault("ldm", attention.forward)
        attention.forward = scaled_dot_product_attention_forward


def list_optimizers(res):
    """Add the built-in optimizations to ``res`` (after those registered by ``on_list_optimizers``)."""
    res.append(SdOptimizationSdp())
