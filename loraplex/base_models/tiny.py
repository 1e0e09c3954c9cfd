"""A tiny random Llama that vLLM's CPU backend serves, built from nothing.

It exists for tests and the fast path of the demo: it starts in seconds and
needs no download. Its tokenizer is a real byte-level BPE trained with the
`tokenizers` library on `tiny_corpus.txt`, with a ChatML chat template (the
same template SmolLM2 uses), so chat rendering, stop tokens and LoRA all
work as on a real model. Same seed, same bytes.
"""

from importlib.resources import files
from pathlib import Path

from loraplex.base_models.finish import finish_model_dir

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
VOCAB_SIZE = 512

# hidden 128 with 2 heads gives head_dim 64: vLLM's CPU attention refuses 16.
# initializer_range 0.1, not 0.02: with 0.02 the frozen output layer caps the
# logits and no LoRA can learn anything (DESIGN.md).
ARCHITECTURE = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    max_position_embeddings=2048,
    initializer_range=0.1,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = files("loraplex.base_models").joinpath("tiny_corpus.txt").read_text()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(), trainer)
    return tokenizer


def make_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write the tiny model (float32 safetensors, tokenizer, chat template) to `out_dir`."""
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=ARCHITECTURE["max_position_embeddings"],
    )
    tokenizer.save_pretrained(out_dir)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **ARCHITECTURE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    # transformers 5 writes the template to chat_template.jinja (which wins on
    # load); the copy in tokenizer_config.json serves readers that look only there.
    finish_model_dir(out_dir, tokenizer_config={"chat_template": CHAT_TEMPLATE})
    return out_dir
