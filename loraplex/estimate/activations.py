"""What autograd keeps for backward, per token, measured on one meta-device decoder layer.

One decoder layer of the meta model (with the run's LoRA layers and dropout)
runs forward on meta tensors of the run's token count, inside
`torch.autograd.graph.saved_tensors_hooks`: every tensor saved for backward
passes the hook, and the distinct storages that are not parameters are
summed. That is the layer's activation memory exactly as this transformers
version and this PEFT build it (norms in fp32, LoRA inputs cast to the
adapter's fp32, one dropout mask per adapted layer), with no formula to keep
in step with them.

Attention is the one piece replaced: a stand-in that saves what the fused
kernels the trainer runs keep (query, key and value with the key/value heads
repeated, the output and the log-sum-exp) instead of the math path's
T × T weights, which no real run keeps.
"""

from dataclasses import dataclass

import torch

from loraplex.estimate.architecture import META_ATTENTION, decoder_layers


@dataclass(frozen=True)
class LayerActivations:
    saved_bytes: int  # saved for backward by one decoder layer for `tokens` tokens
    input_bytes: int  # the layer's input (what a checkpointed layer keeps)
    tokens: int

    @property
    def per_token(self) -> float:
        return self.saved_bytes / self.tokens


class _FusedAttention(torch.autograd.Function):
    """Saves what flash-style kernels save; its output has the right shape, nothing more."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = torch.empty_like(query)
        lse = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - never run: meta tensors only
        query, key, value, _, _ = ctx.saved_tensors
        return torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)


def _attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    return _FusedAttention.apply(query, key, value).transpose(1, 2).contiguous(), None


def register_meta_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(META_ATTENTION, _attention)
    AttentionMaskInterface.register(META_ATTENTION, lambda **kwargs: None)


class _BoolMaskDropout(torch.nn.Module):
    """Dropout as CUDA's fused kernel and loraplex's CPU dropout keep it: a bool mask."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        return torch.where(mask, x, 0.0) * (1.0 / (1.0 - self.p))


def use_bool_mask_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict):
            for name, dropout in dropouts.items():
                if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                    dropouts[name] = _BoolMaskDropout(dropout.p)


def measure_layer(model, tokens: int, dtype: torch.dtype) -> LayerActivations:
    """Bytes saved for backward by the first decoder layer of `model` for one row of `tokens`."""
    layers = decoder_layers(model)
    layer = layers[0]
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    params |= {b.untyped_storage()._cdata for b in model.buffers()}
    hidden = torch.empty(1, tokens, model.config.get_text_config().hidden_size, dtype=dtype)
    hidden = hidden.to("meta").requires_grad_(True)
    positions = torch.arange(tokens, device="meta")[None]
    decoder = model.get_decoder()
    kwargs = dict(position_ids=positions, attention_mask=None)
    rotary = getattr(decoder, "rotary_emb", None)
    if rotary is not None:
        kwargs["position_embeddings"] = rotary(hidden, positions)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            saved[storage._cdata] = max(saved.get(storage._cdata, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(hidden, **kwargs)
    return LayerActivations(sum(saved.values()), hidden.numel() * hidden.element_size(), tokens)
