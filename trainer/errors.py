"""The trainer's errors: one class per kind of failure, messages written for the user.

The CLI prints the message of any `TrainError` on one line and exits
non-zero; nothing else in the trainer turns errors into output.
"""


class TrainError(Exception):
    """Base class: anything that stops a training run for a reason the user can fix."""


class ConfigError(TrainError):
    """The configuration (YAML or flags) is invalid: found before anything is loaded."""


class DataError(TrainError):
    """The data cannot be used: unreadable file, unknown format, no valid example."""


class TemplateError(TrainError):
    """The base tokenizer's chat template cannot show which tokens are the assistant's."""


class ResumeError(TrainError):
    """`--resume` cannot continue this run (no checkpoint, or a different configuration)."""


class ExportError(TrainError):
    """The trained adapter failed the export gate (vLLM could not serve it)."""
