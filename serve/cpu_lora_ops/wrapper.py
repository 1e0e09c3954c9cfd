"""loraplex's punica wrapper for the CPU: where vLLM's CPU LoRA layers call their ops.

Contract: `LoraplexPunicaWrapperCPU` is vLLM's `PunicaWrapperCPU` (same
constructor, same methods, same results within the model dtype's rounding)
with loraplex's ops behind it, chosen per call by `plugin.chosen_ops()`:

- `loraplex`: every linear module's LoRA is one shrink and one expand over
  all its slices (fused.py), with rows grouped by slot (plan.py) and the
  batch's slots first in the fused copies (positions.py), both worked out
  once per batch mapping; the logits LoRA is skipped while every slot's weights
  are zero (zero_slots.py); the other paths (embeddings, full linear,
  tensor-parallel slices) and the logits LoRA of an adapter that has one use
  the grouped ops of ops.py. Rows whose slot is -1 are left alone.
- `grouped`: vLLM's slice-by-slice calls, each with loraplex's grouped ops;
- `vllm`: exactly vLLM's `PunicaWrapperCPU` with vLLM's torch ops, for
  side-by-side benchmarks.

vLLM builds the wrapper named by the platform's `get_punica_wrapper()`;
platform.py's CPU platform names this class.
"""

from types import ModuleType
from typing import Any

import torch
import vllm.lora.ops.torch_ops as vllm_ops
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from loraplex.serve.cpu_lora_ops import ops as loraplex_ops
from loraplex.serve.cpu_lora_ops.fused import FusedWeights, apply_fused
from loraplex.serve.cpu_lora_ops.plan import Plan, plan_for_tokens
from loraplex.serve.cpu_lora_ops.plugin import chosen_ops
from loraplex.serve.cpu_lora_ops.positions import Layout, Positions
from loraplex.serve.cpu_lora_ops.zero_slots import NonzeroSlots


class LoraplexPunicaWrapperCPU(PunicaWrapperCPU):
    def __init__(self, max_num_batched_tokens: int, max_batches: int, device, **kwargs):
        super().__init__(max_num_batched_tokens, max_batches, device, **kwargs)
        self._fused = FusedWeights()
        self._slot_ids: list[int | None] = []
        self._plan: Plan | None = None
        self._positions = Positions()
        self._layout: Layout | None = None
        self._nonzero = NonzeroSlots()

    @property
    def _ops(self) -> ModuleType:
        return vllm_ops if chosen_ops() == "vllm" else loraplex_ops

    def update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs):
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        # A copy: vLLM keeps mutating its list as slots change.
        self._slot_ids = list(lora_index_to_id)
        # vLLM calls this only when the batch's mapping or slot layout changes
        # (set_adapter_mapping); every layer until the next call shares one plan.
        self._plan = self._layout = None

    def _linear_plan(self) -> tuple[Plan, Layout]:
        if self._plan is None or self._layout is None:
            token_slots = self.token_lora_indices
            slots = torch.unique(token_slots).tolist()
            self._layout = self._positions.arrange([slot for slot in slots if slot >= 0])
            self._plan = plan_for_tokens(self._layout.positions(token_slots))
        return self._plan, self._layout

    def add_lora_linear(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
        *,
        buffer: tuple[torch.Tensor, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        rows, x = y.view(-1, y.shape[-1]), x.view(-1, x.shape[-1])
        plan, layout = self._linear_plan()
        fits = plan.num_rows == x.shape[0] == rows.shape[0] and sum(output_slices) <= rows.shape[1]
        if chosen_ops() != "loraplex" or not fits:
            # The slice-by-slice path, whose ops explain a mismatch of rows.
            super().add_lora_linear(
                y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
            )
            return
        if plan.kind == "none":
            return
        slot_ids = self._slot_ids
        copy = self._fused.get(
            lora_a_stacked, lora_b_stacked, output_slices, slot_ids, layout, y.dtype
        )
        apply_fused(x.to(y.dtype), copy, rows[:, : copy.width], plan, scale)

    # vLLM's PunicaWrapperCPU calls its module's op functions; these are the
    # same six paths with the chosen ops.

    def _shrink_prefill(self, y, x, w_t_all, scale):
        if not self.no_lora:
            self._ops.sgmv_shrink(x, w_t_all, y, *self.prefill_metadata, scale)

    def _shrink_decode(self, y, x, w_t_all, scale):
        self._ops.bgmv_shrink(x, w_t_all, y, self.token_lora_indices, scale)

    def _expand_prefill(self, y, x, w_t_all, add_inputs):
        if not self.no_lora:
            self._ops.sgmv_expand(x, w_t_all, y, *self.prefill_metadata, add_inputs)

    def _expand_decode(self, y, x, w_t_all, add_inputs):
        self._ops.bgmv_expand(x, w_t_all, y, self.token_lora_indices, add_inputs)

    def _expand_slice_prefill(self, y, x, w_t_all, y_offset, y_slice_size, add_inputs):
        if not self.no_lora:
            meta = self.prefill_metadata
            self._ops.sgmv_expand_slice(x, w_t_all, y, *meta, y_offset, y_slice_size, add_inputs)

    def _expand_slice_decode(self, y, x, w_t_all, y_offset, y_slice_size, add_inputs):
        indices = self.token_lora_indices
        self._ops.bgmv_expand_slice(x, w_t_all, y, indices, y_offset, y_slice_size, add_inputs)

    def add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, *, buffer=None, **kw):
        if chosen_ops() == "loraplex" and not self._nonzero.of(lora_b_stacked, self._slot_ids):
            return  # no slot has an output-head LoRA: adding zeros changes nothing
        rows, x = y.view(-1, y.shape[-1]), x.view(-1, x.shape[-1])
        if buffer is None:
            buffer = torch.zeros((x.size(0), lora_b_stacked.size(-1)), dtype=torch.float32)
        self._ops.bgmv_shrink(x, lora_a_stacked, buffer, self.sampler_indices, scale)
        self._ops.bgmv_expand(buffer, lora_b_stacked, rows, self.sampler_indices, add_inputs=True)

    def apply_lora_full_linear(self, y, x, weight_stacked, bias_stacked, module_enabled):
        adapter_y = torch.zeros((x.size(0), weight_stacked.size(-2)), dtype=torch.float32)
        self._ops.bgmv_shrink(x, weight_stacked, adapter_y, self.sampler_indices, 1.0)
        y.copy_(self._select_full_linear_output(y, adapter_y, bias_stacked, module_enabled))
