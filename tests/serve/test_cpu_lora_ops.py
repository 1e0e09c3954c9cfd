"""loraplex's CPU LoRA ops against vLLM 0.32's own, on random tensors.

Equal within float tolerance wherever no token has index -1; rows with index
-1 are left unchanged by loraplex (vLLM's CPU ops give them the last slot's
adapter, vllm#48421 — asserted too, so we notice when vLLM fixes it).
"""

import pytest
import torch
from vllm.lora.ops import torch_ops as vllm_ops

from loraplex.serve.cpu_lora_ops import ops as ours

SLOTS, HIDDEN, RANK, OUT, TOKENS = 4, 64, 16, 96, 23
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def indices_for(kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "one":
        return torch.full((TOKENS,), 2, dtype=torch.long)
    if kind == "several":
        return torch.randint(0, SLOTS, (TOKENS,), generator=gen)
    return torch.randint(-1, SLOTS, (TOKENS,), generator=gen)  # "with_base"


def stack(shape: tuple[int, ...], four_d: bool, dtype, gen) -> torch.Tensor:
    w = torch.randn(SLOTS, *shape, generator=gen).to(dtype)
    return w.unsqueeze(1) if four_d else w


def compare(got: torch.Tensor, want: torch.Tensor, rows: torch.Tensor, dtype) -> None:
    torch.testing.assert_close(got[rows], want[rows], **TOL[dtype])


DTYPES = [torch.float32, torch.bfloat16]
KINDS = ["one", "several", "with_base"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("four_d", [False, True])
def test_bgmv_shrink_matches_vllm(dtype, kind, four_d):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(TOKENS, HIDDEN, generator=gen).to(dtype)
    w = stack((RANK, HIDDEN), four_d, dtype, gen)
    idx = indices_for(kind, gen)
    want = torch.zeros(TOKENS, RANK, dtype=dtype)
    got = torch.zeros(TOKENS, RANK, dtype=dtype)
    vllm_ops.bgmv_shrink(x, w, want, idx, 0.5)
    ours.bgmv_shrink(x, w, got, idx, 0.5)
    compare(got, want, idx >= 0, dtype)
    assert torch.all(got[idx < 0] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("four_d", [False, True])
@pytest.mark.parametrize("add_inputs", [True, False])
def test_bgmv_expand_matches_vllm(dtype, kind, four_d, add_inputs):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(TOKENS, RANK, generator=gen).to(dtype)
    w = stack((OUT, RANK), four_d, dtype, gen)
    idx = indices_for(kind, gen)
    start = torch.randn(TOKENS, OUT, generator=gen).to(dtype)
    want, got = start.clone(), start.clone()
    vllm_ops.bgmv_expand(x, w, want, idx, add_inputs)
    ours.bgmv_expand(x, w, got, idx, add_inputs)
    compare(got, want, idx >= 0, dtype)
    assert torch.equal(got[idx < 0], start[idx < 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("add_inputs", [True, False])
def test_bgmv_expand_slice_matches_vllm(dtype, kind, add_inputs):
    gen = torch.Generator().manual_seed(2)
    offset, size = 32, 48
    x = torch.randn(TOKENS, RANK, generator=gen).to(dtype)
    w = stack((size, RANK), True, dtype, gen)
    idx = indices_for(kind, gen)
    start = torch.randn(TOKENS, OUT + 32, generator=gen).to(dtype)
    want, got = start.clone(), start.clone()
    vllm_ops.bgmv_expand_slice(x, w, want, idx, offset, size, add_inputs)
    ours.bgmv_expand_slice(x, w, got, idx, offset, size, add_inputs)
    compare(got, want, idx >= 0, dtype)
    assert torch.equal(got[idx < 0], start[idx < 0])
    outside = torch.cat([got[:, :offset], got[:, offset + size :]], dim=1)
    assert torch.equal(outside, torch.cat([start[:, :offset], start[:, offset + size :]], dim=1))


def sequences(kind: str, gen) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seq_lens, lora_index per sequence, start offsets) for 4 sequences summing to TOKENS."""
    seq_lens = torch.tensor([5, 7, 3, 8])
    lora = {"one": [1, 1, 1, 1], "several": [0, 3, 1, 2], "with_base": [0, -1, 3, -1]}[kind]
    starts = torch.cumsum(seq_lens, 0) - seq_lens
    return seq_lens, torch.tensor(lora), starts


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_sgmv_ops_match_vllm(dtype, kind):
    gen = torch.Generator().manual_seed(3)
    seq_lens, lora, starts = sequences(kind, gen)
    token_idx = torch.repeat_interleave(lora, seq_lens)
    common = (starts, seq_lens, lora, 4, int(seq_lens.max()), TOKENS)

    x = torch.randn(TOKENS, HIDDEN, generator=gen).to(dtype)
    wa = stack((RANK, HIDDEN), True, dtype, gen)
    want, got = torch.zeros(TOKENS, RANK, dtype=dtype), torch.zeros(TOKENS, RANK, dtype=dtype)
    vllm_ops.sgmv_shrink(x, wa, want, *common, 2.0)
    ours.sgmv_shrink(x, wa, got, *common, 2.0)
    compare(got, want, token_idx >= 0, dtype)

    h = torch.randn(TOKENS, RANK, generator=gen).to(dtype)
    wb = stack((OUT, RANK), False, dtype, gen)
    start = torch.randn(TOKENS, OUT, generator=gen).to(dtype)
    want, got = start.clone(), start.clone()
    vllm_ops.sgmv_expand(h, wb, want, *common, True)
    ours.sgmv_expand(h, wb, got, *common, True)
    compare(got, want, token_idx >= 0, dtype)
    assert torch.equal(got[token_idx < 0], start[token_idx < 0])

    ws = stack((40, RANK), True, dtype, gen)
    want, got = start.clone(), start.clone()
    vllm_ops.sgmv_expand_slice(h, ws, want, *common, 16, 40, False)
    ours.sgmv_expand_slice(h, ws, got, *common, 16, 40, False)
    compare(got, want, token_idx >= 0, dtype)
    assert torch.equal(got[token_idx < 0], start[token_idx < 0])


def test_vllm_cpu_ops_still_leak_the_last_adapter_into_base_tokens():
    """Documents vllm#48421: if this starts failing, vLLM fixed its CPU ops."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, HIDDEN, generator=gen)
    w = stack((RANK, HIDDEN), False, torch.float32, gen)
    idx = torch.tensor([0, -1, -1])
    out = torch.zeros(3, RANK)
    vllm_ops.bgmv_shrink(x, w, out, idx, 1.0)
    torch.testing.assert_close(out[1], x[1] @ w[SLOTS - 1].T)


def test_plugin_replaces_the_ops_punica_cpu_uses(monkeypatch):
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    from loraplex.serve.cpu_lora_ops import plugin

    monkeypatch.setenv(plugin.ENV, "loraplex")
    plugin.register()
    assert punica_cpu.bgmv_shrink is ours.bgmv_shrink
    assert punica_cpu.sgmv_expand_slice is ours.sgmv_expand_slice
    assert plugin.active_cpu_lora_ops() == "loraplex"
