"""The loss on the real tiny model: packing changes nothing, nor does gradient accumulation."""

import random

import pytest
import torch
import torch.nn.functional as F

from loraplex.trainer import loss
from loraplex.trainer.attention import NAME as PACKED
from loraplex.trainer.config import LoraSettings
from loraplex.trainer.data import Conversation, Message
from loraplex.trainer.loop import accumulate, evaluate
from loraplex.trainer.loss import FrozenHeadCrossEntropy, TokenLoss, token_loss_sum
from loraplex.trainer.model import load_model, uses_per_example_attention
from loraplex.trainer.packing import collate, collate_packed
from loraplex.trainer.plan import plan_eval
from loraplex.trainer.render import IGNORE, ChatRenderer

CPU = torch.device("cpu")
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dogs",
    "ran",
    "far",
    "away",
    "under",
    "blue",
    "skies",
    "and",
    "red",
    "suns",
]


@pytest.fixture(scope="module")
def examples(tokenizer):
    """Twelve conversations of mixed lengths (15 to ~150 tokens)."""
    rng = random.Random(0)
    renderer = ChatRenderer(tokenizer)
    conversations = [
        Conversation(
            (
                Message("user", " ".join(rng.choices(WORDS, k=rng.randint(1, 30)))),
                Message("assistant", " ".join(rng.choices(WORDS, k=rng.randint(1, 40))), True),
            ),
            f"x:{i}",
        )
        for i in range(12)
    ]
    return [renderer.render(c) for c in conversations]


@pytest.fixture(
    scope="module",
    params=[("lora", "sdpa"), ("lora", PACKED), ("qlora", PACKED)],
    ids=["lora-sdpa", "lora-per-example", "qlora-per-example"],
)
def model(request, tiny_model_dir):
    """LoRA and QLoRA; transformers' block-mask packing and loraplex's per-example attention."""
    method, attention = request.param
    torch.manual_seed(0)
    lora = LoraSettings(dropout=0.0)
    model = load_model(tiny_model_dir, method, lora, CPU, True, attention=attention)
    with torch.no_grad():  # a non-zero B, so that the LoRA path counts in every check
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model


def batches(model, examples, packing: bool, pad_id: int, batch_size: int = 4):
    lengths = [len(e) for e in examples]
    plan = plan_eval(lengths, batch_size=batch_size, packing=packing, max_length=256)
    flat = uses_per_example_attention(model)
    return [collate(examples, mb, packing, pad_id, flat) for mb in plan]


def test_packing_on_and_off_give_the_same_loss(model, examples, tokenizer):
    padded = evaluate(
        TokenLoss(model), batches(model, examples, False, tokenizer.pad_token_id), CPU
    )
    packed_batches = batches(model, examples, True, tokenizer.pad_token_id)
    packed = evaluate(TokenLoss(model), packed_batches, CPU)
    assert len(packed_batches) < len(batches(model, examples, False, tokenizer.pad_token_id))
    assert abs(packed - padded) < 1e-3
    assert 1.0 < padded < 10.0  # a real loss, not a degenerate one


def test_no_attention_across_packed_examples(model, examples, tokenizer):
    """Example b's loss is the same alone and after an unrelated example a."""
    a, b = examples[0], examples[1]
    other = examples[2]
    alone = token_loss_sum(model, collate_packed([b], [[0]], len(b), 0))
    after_a = token_loss_sum(model, collate_packed([a, b], [[1]], len(b), 0))
    assert torch.equal(alone, after_a)  # sanity: same inputs, same numbers
    packed_ab = collate_packed([a, b], [[0, 1]], len(a) + len(b), 0)
    packed_ob = collate_packed([other, b], [[0, 1]], len(other) + len(b), 0)
    a_only = token_loss_sum(model, collate_packed([a], [[0]], len(a), 0))
    o_only = token_loss_sum(model, collate_packed([other], [[0]], len(other), 0))
    tol = 1e-4 if model.get_base_model().dtype == torch.float32 else 2e-2
    with torch.no_grad():
        b_after_a = token_loss_sum(model, packed_ab) - a_only
        b_after_other = token_loss_sum(model, packed_ob) - o_only
    assert abs(b_after_a.item() - alone.item()) < tol * max(1.0, alone.item())
    assert abs(b_after_other.item() - alone.item()) < tol * max(1.0, alone.item())


def gradients(model, micro_batches) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    accumulate(TokenLoss(model), micro_batches, CPU)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("packing", [False, True])
def test_batch_4_accum_1_equals_batch_1_accum_4(model, examples, tokenizer, packing):
    pad = tokenizer.pad_token_id
    rows = [(i,) for i in range(8)] if not packing else [(0, 1), (2, 3), (4, 5), (6, 7)]
    flat = uses_per_example_attention(model)
    one_step = [collate(examples, tuple(rows), packing, pad, flat)]
    four_steps = [collate(examples, (row,), packing, pad, flat) for row in rows]
    big, small = gradients(model, one_step), gradients(model, four_steps)
    fp32 = model.get_base_model().dtype == torch.float32
    for name in big:
        scale = big[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(
            small[name], big[name], rtol=0, atol=(1e-6 if fp32 else 1e-2) * max(scale, 1e-3)
        )


def test_gradients_after_an_eval_pass_are_unchanged(model, examples, tokenizer):
    """bitsandbytes must not switch 4-bit weights to its inference-only layout in eval."""
    micro = [collate(examples, ((0,), (1,)), False, tokenizer.pad_token_id)]
    before = gradients(model, micro)
    evaluate(TokenLoss(model), batches(model, examples, False, tokenizer.pad_token_id), CPU)
    after = gradients(model, micro)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_the_frozen_head_loss_gives_autograds_loss_and_gradient(dtype, chunk):
    torch.manual_seed(0)
    weight, bias = torch.randn(300, 32, dtype=dtype), torch.randn(300, dtype=dtype)
    hidden = torch.randn(64, 32, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, 300, (64,))
    expected = F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected * 0.5, hidden)
    total = FrozenHeadCrossEntropy.apply(hidden, weight, bias, targets, chunk)
    (grad,) = torch.autograd.grad(total * 0.5, hidden)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [16, 4096], ids=["chunked", "one-chunk"])
def test_token_loss_matches_the_models_own_loss_and_gradients(
    model, examples, tokenizer, chunk, monkeypatch
):
    """transformers' loss over all logits vs. ours over trained tokens' logits only."""
    monkeypatch.setattr(loss, "LOGITS_CHUNK", chunk)
    batch = collate(examples, tuple((i,) for i in range(4)), False, tokenizer.pad_token_id)
    labels = torch.full_like(batch.targets, IGNORE)  # transformers shifts labels itself
    labels[:, 1:] = batch.targets[:, :-1]
    assert batch.trained_tokens > chunk or chunk == 4096
    model.zero_grad(set_to_none=True)
    ours = token_loss_sum(model, batch) / batch.trained_tokens
    ours.backward()
    our_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    theirs = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels
    ).loss
    theirs.backward()
    fp32 = model.get_base_model().dtype == torch.float32
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5 if fp32 else 1e-2)
    for name, param in model.named_parameters():
        if param.requires_grad:
            scale = param.grad.abs().max().item()
            assert scale > 0, name
            tol = (1e-5 if fp32 else 2e-2) * scale
            torch.testing.assert_close(our_grads[name], param.grad, rtol=0, atol=tol)
    model.zero_grad(set_to_none=True)
