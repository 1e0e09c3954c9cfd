"""The training loss: a sum of token cross-entropies, normalised by the caller.

`token_loss_sum` returns the *sum* over the trained tokens of one micro-batch;
the loop divides by the number of trained tokens in the whole optimizer step
(every micro-batch of it), so the gradient is the mean over the step's
tokens whatever the split into micro-batches: batch 4 × accumulation 1 and
batch 1 × accumulation 4 give the same update.

Only trained positions go through the output layer: for models whose causal-LM
head is a plain linear layer over the decoder's last hidden state, the
hidden states are gathered first, so logits (vocabulary-wide, in fp32) exist
for the trained tokens only, a chunk at a time.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from loraplex.trainer.packing import Batch
from loraplex.trainer.render import IGNORE

# Causal LMs whose forward is exactly lm_head(decoder(...)): no logit scaling or
# soft-capping that a direct call of the head would skip.
PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
# Tokens whose logits are materialised at once; beyond this, chunks are
# recomputed in backward (activation checkpointing of the head).
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
    if len(targets) <= LOGITS_CHUNK:
        return _cross_entropy_sum(hidden, targets, head)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), LOGITS_CHUNK):
        chunk = slice(start, start + LOGITS_CHUNK)
        total = total + checkpoint(
            _cross_entropy_sum, hidden[chunk], targets[chunk], head, use_reentrant=False
        )
    return total


def _cross_entropy_sum(hidden: torch.Tensor, targets: torch.Tensor, head) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")
