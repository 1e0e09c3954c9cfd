"""The run's model on the meta device: the base at its compute dtype with the run's LoRA layers.

The same `all-linear` resolution and PEFT configuration as the trainer
(trainer/model.py), so the adapted modules, the adapter parameters and
their dtype (fp32) are the ones the run will have.
"""

import torch

from loraplex.estimate.activations import register_meta_attention, use_bool_mask_dropout
from loraplex.estimate.architecture import META_ATTENTION, meta_model
from loraplex.trainer.config import LoraSettings


def compute_dtype(device_kind: str) -> torch.dtype:
    """The dtype of the base's activations: trainer/model.py's own choice."""
    from loraplex.trainer.model import base_dtype

    return base_dtype(torch.device(device_kind))


def meta_lora_model(hf_config, lora: LoraSettings, device_kind: str):
    from loraplex.trainer.model import add_lora

    register_meta_attention()
    model = meta_model(hf_config, compute_dtype(device_kind), META_ATTENTION)
    for param in model.parameters():
        param.requires_grad_(False)
    peft_model = add_lora(model, lora)
    use_bool_mask_dropout(peft_model)
    return peft_model


def lora_parameter_count(peft_model) -> int:
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
