"""Stand-in for Forge 2 ``backend/sampling/condition.py``: conditioning as the sampler batches it.

A compiled condition is ``{"cross_attn": tensor, "model_conds": {"c_crossattn": ConditionCrossAttn(t)}}``
(plus ``"strength"`` for weighted ones). Condition objects know how to fit a batch (``process_cond``
repeats or cuts rows), whether two can share a UNet call (``can_concat``) and how to join
(``concat``). Text conditions of different token lengths join when the lengths' least common multiple is
at most 4× the shorter one: each is repeated along the tokens up to that length (attention over
repeated tokens gives the same result), as in Forge.
``compile_weighted_conditions(cond, weights)``: ``weights`` is prompt_parser's ``conds_list`` (per image,
``[(row, weight), ...]``); the k-th sub-prompt of every image forms one condition from those rows, with
the last image's weight as its ``strength``.
SDXL's dict conditioning (``{"crossattn", "vector"}``) compiles to ``cross_attn``, ``pooled_output`` and model
conds ``c_crossattn`` and ``y`` (a plain ``Condition`` of the vector), as in Forge.
Not provided: Flux's ``guidance``.
"""
import math

import torch


def repeat_to_batch_size(tensor, batch_size):
    """``tensor`` with its rows repeated (or cut) to ``batch_size``."""
    if tensor.shape[0] == batch_size:
        return tensor
    repeats = -(-batch_size // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch_size]


def lcm(a, b):
    return a * b // math.gcd(a, b)


class Condition:
    def __init__(self, cond):
        self.cond = cond

    def _copy_with(self, cond):
        return type(self)(cond)

    def process_cond(self, batch_size, device, **kwargs):
        return self._copy_with(repeat_to_batch_size(self.cond, batch_size).to(device))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape

    def concat(self, others):
        return torch.cat([self.cond, *(other.cond for other in others)])


class ConditionNoiseShape(Condition):
    def process_cond(self, batch_size, device, area, **kwargs):
        height, width, top, left = area
        region = self.cond[:, :, top:top + height, left:left + width]
        return self._copy_with(repeat_to_batch_size(region, batch_size).to(device))


class ConditionCrossAttn(Condition):
    def can_concat(self, other):
        mine, theirs = self.cond.shape, other.cond.shape
        if mine == theirs:
            return True
        if (mine[0], mine[2]) != (theirs[0], theirs[2]):
            return False
        return lcm(mine[1], theirs[1]) // min(mine[1], theirs[1]) <= 4

    def concat(self, others):
        tensors = [self.cond, *(other.cond for other in others)]
        tokens = 1
        for t in tensors:
            tokens = lcm(tokens, t.shape[1])
        return torch.cat([t.repeat(1, tokens // t.shape[1], 1) for t in tensors])


class ConditionConstant(Condition):
    def process_cond(self, batch_size, device, **kwargs):
        return self._copy_with(self.cond)

    def can_concat(self, other):
        return self.cond == other.cond

    def concat(self, others):
        return self.cond


def compile_conditions(cond):
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return [{"cross_attn": cond, "model_conds": {"c_crossattn": ConditionCrossAttn(cond)}}]
    if "guidance" in cond:
        raise NotImplementedError("Flux's guidance condition is not supported by the stand-in")
    cross_attn, pooled = cond["crossattn"], cond["vector"]
    return [{"cross_attn": cross_attn, "pooled_output": pooled,
             "model_conds": {"c_crossattn": ConditionCrossAttn(cross_attn), "y": Condition(pooled)}}]


def compile_weighted_conditions(cond, weights):
    compiled = []
    for column in zip(*weights):  # the k-th sub-prompt of every image
        rows = [row for row, _ in column]
        picked = cond.advanced_indexing(rows) if hasattr(cond, "advanced_indexing") else cond[rows]
        entry = compile_conditions(picked)[0]
        entry["strength"] = column[-1][1]
        compiled.append(entry)
    return compiled
