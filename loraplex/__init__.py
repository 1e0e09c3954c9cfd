"""loraplex: one quantized base model, many LoRA adapters, one OpenAI-compatible endpoint."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("loraplex")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
