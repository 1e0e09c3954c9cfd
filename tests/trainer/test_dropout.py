"""CheapDropout: nn.Dropout's masks (independent, rate p, mean-preserving) from fewer draws."""

from pathlib import Path

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from loraplex.trainer.config import LoraSettings
from loraplex.trainer.dropout import CheapDropout, use_cheap_lora_dropout
from loraplex.trainer.model import load_model

N = 1 << 20


def dropped(p: float, shape=(N,)) -> torch.Tensor:
    """Which elements one training-mode call drops."""
    return CheapDropout(p).train()(torch.ones(shape)) == 0


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_elements_are_dropped_at_rate_p_and_the_rest_scaled_to_keep_the_mean(p):
    torch.manual_seed(0)
    out = CheapDropout(p).train()(torch.ones(N))
    rate = float((out == 0).float().mean())
    assert rate == pytest.approx(p, abs=5 * (p * (1 - p) / N) ** 0.5 + 1 / 32768)
    kept = out[out != 0]
    assert torch.all(kept == kept[0])  # one scale for every kept element
    assert float(out.mean()) == pytest.approx(1.0, abs=0.01)


def test_neighbouring_elements_and_successive_calls_get_independent_masks():
    # Four elements share one 64-bit draw: their masks must still be independent.
    torch.manual_seed(0)
    p = 0.1
    first, second = dropped(p), dropped(p)
    for a, b in [(first[:-1], first[1:]), (first[0::4], first[3::4]), (first, second)]:
        both = float((a & b).float().mean())
        assert both == pytest.approx(p * p, abs=0.002)


def test_an_odd_shape_and_a_non_contiguous_input_are_masked_whole():
    torch.manual_seed(0)
    x = torch.ones(7, 13, 5).transpose(0, 2)  # 455 elements, not a multiple of 4
    out = CheapDropout(0.5).train()(x)
    assert out.shape == x.shape
    assert 0 < int((out == 0).sum()) < x.numel()


def test_eval_mode_and_p_zero_return_the_input_unchanged():
    x = torch.randn(64, 32)
    assert CheapDropout(0.3).eval()(x) is x
    assert CheapDropout(0.0).train()(x) is x


def test_the_seed_fixes_the_mask_and_gradients_flow_through_kept_elements_only():
    x = torch.randn(256, 64, requires_grad=True)
    dropout = CheapDropout(0.2).train()
    torch.manual_seed(3)
    out = dropout(x)
    torch.manual_seed(3)
    assert torch.equal(dropout(x), out)
    out.sum().backward()
    expected = torch.where(out != 0, torch.full_like(x, dropout.scale), 0.0)
    torch.testing.assert_close(x.grad, expected)


def test_gradient_checkpointing_replays_the_same_masks():
    dropout = CheapDropout(0.2).train()
    weight = torch.randn(64, 64, requires_grad=True)

    def layer(x):
        return dropout(x) @ weight

    x = torch.randn(128, 64)
    grads = []
    for checkpointed in (False, True):
        weight.grad = None
        torch.manual_seed(5)
        out = checkpoint(layer, x, use_reentrant=False) if checkpointed else layer(x)
        (out**2).sum().backward()
        grads.append(weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_every_lora_layer_of_a_peft_model_gets_cheap_dropout(tiny_model_dir: Path):
    model = load_model(
        tiny_model_dir, "lora", LoraSettings(dropout=0.05), torch.device("cpu"), False
    )
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    assert use_cheap_lora_dropout(model) == len(lora_layers) > 0
    for layer in lora_layers:
        assert isinstance(layer.lora_dropout["default"], CheapDropout)
        assert layer.lora_dropout["default"].threshold == round(0.05 * 32768)
