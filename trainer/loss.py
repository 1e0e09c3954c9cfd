"""The training loss: a sum of token cross-entropies, normalised by the caller.

`token_loss_sum` returns the *sum* over the trained tokens of one micro-batch;
the loop divides by the number of trained tokens in the whole optimizer step
(every micro-batch of it), so the gradient is the mean over the step's
tokens whatever the split into micro-batches: batch 4 × accumulation 1 and
batch 1 × accumulation 4 give the same update.

Only trained positions go through the output layer, and a chunk at a time.
For models whose causal-LM head is a plain linear layer over the decoder's
last hidden state, the trained tokens' hidden states are gathered, and, as
LoRA leaves the head frozen, `FrozenHeadCrossEntropy` computes each chunk's
loss *and* its gradient in the forward pass: vocabulary-wide logits (fp32)
exist for one chunk at a time, and backward has nothing to recompute. This
is the fused linear cross-entropy of GPU kernels such as Liger's, in plain
PyTorch. On SmolLM2 (49,152 tokens in the vocabulary) the logits of a
2,048-token micro-batch are 400 MB, and autograd would keep several copies.
"""

import torch
import torch.nn.functional as F

from loraplex.trainer.packing import Batch
from loraplex.trainer.render import IGNORE

# Causal LMs whose forward is exactly lm_head(decoder(...)): no logit scaling or
# soft-capping that a direct call of the head would skip.
PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
# Tokens whose logits exist at once: 1,024 × 49,152 fp32 logits are 200 MB.
LOGITS_CHUNK = 1024


def token_loss_sum(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Sum of cross-entropy over the batch's trained tokens, as an fp32 scalar."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    mask = batch.targets != IGNORE
    targets = batch.targets[mask]
    inputs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,  # a cache would switch off packed-sequence masking
    )
    if causal.config.model_type not in PLAIN_HEAD_MODEL_TYPES:
        logits = model(**inputs).logits[mask]
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    hidden = causal.get_decoder()(**inputs).last_hidden_state[mask]
    head = causal.get_output_embeddings()
    if type(head) is not torch.nn.Linear or any(p.requires_grad for p in head.parameters()):
        # A head that trains (or is wrapped): plain autograd, trained tokens only.
        return F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    return FrozenHeadCrossEntropy.apply(hidden, head.weight, head.bias, targets, LOGITS_CHUNK)


class FrozenHeadCrossEntropy(torch.autograd.Function):
    """Σ cross-entropy(hidden @ weightᵀ + bias, targets), chunk by chunk; weight and bias frozen.

    The gradient with respect to `hidden` — (softmax − one-hot) @ weight — is
    computed with each chunk's logits and kept: one (tokens × hidden) tensor.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, len(targets), chunk):
            part = slice(start, start + chunk)
            logits = F.linear(hidden[part], weight, bias).float()
            target = targets[part]
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, target[:, None]).squeeze(1)).sum()
            if grad is not None:
                probs = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place
                probs[torch.arange(len(target), device=probs.device), target] -= 1
                grad[part] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None, None


class TokenLoss(torch.nn.Module):
    """`token_loss_sum` as a module: the one that DDP or FSDP2 wraps (distributed.py).

    Their hooks run when the wrapped module is called, and the loss reaches the
    decoder and the head directly (above), not through the model's forward.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, targets, position_ids, attention_mask=None) -> torch.Tensor:
        return token_loss_sum(self.model, Batch(input_ids, targets, position_ids, attention_mask))
