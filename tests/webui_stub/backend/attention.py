"""Stand-in for Forge 2 ``backend/attention.py``: the attention kernel patches and modules call.

``attention_function(q, k, v, heads, mask=None)`` takes and returns ``[batch, tokens, heads·dim_head]``
tensors and computes softmax attention per head with torch's ``scaled_dot_product_attention`` (Forge's
default "pytorch" implementation). ``attention_pytorch`` is the same function under its Forge name.
"""
import torch.nn.functional as F


def attention_pytorch(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False):
    if skip_reshape:  # already [batch, heads, tokens, dim_head]
        per_head = (q, k, v)
    else:
        per_head = tuple(t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    if mask is not None and mask.ndim == 2:
        mask = mask[None, None]
    attended = F.scaled_dot_product_attention(*per_head, attn_mask=mask)
    return attended.transpose(1, 2).flatten(2)


attention_function = attention_pytorch
