"""What the code accepts, read from the code itself: the `loraplex` commands'
flags (typer's click parameters) and ServeSettings' environment variables.
The deployment tests hold the manifests and the Dockerfile to these."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import typer

from loraplex.cli import app
from loraplex.serve.settings import ServeSettings
from tests.deploy.manifests import split_args

# LORAPLEX_* variables that are not ServeSettings fields, and who reads them.
NON_SETTINGS_ENV = {
    "LORAPLEX_S3_ENDPOINT_URL": "adapters/s3.py",
}
# vLLM engine flags the manifests pass through `loraplex serve`
# (test_vllm_flags.py checks them against vLLM's own argument parser).
VLLM_PASSTHROUGH = {"--gpu-memory-utilization", "--max-model-len"}


# typer builds click-style commands (with its own copy of click): a command
# has `params`; an option parameter has `opts`, `secondary_opts` (`--no-x`),
# `is_flag` and `multiple`.
Command = Any


@cache
def command(name: str) -> Command:
    """The parsed form of `loraplex NAME`, as the root app builds it."""
    commands = typer.main.get_command(app).commands
    assert name in commands, f"`loraplex {name}` does not exist"
    return commands[name]


def options(cmd: Command) -> dict[str, Any]:
    """Every long option of the command (`--port`, `--no-progress`, ...) → its parameter."""
    return {
        opt: param
        for param in cmd.params
        if param.param_type_name == "option"
        for opt in param.opts + param.secondary_opts
        if opt.startswith("--")
    }


def settings_env_names() -> set[str]:
    prefix = ServeSettings.model_config["env_prefix"]
    return {f"{prefix}{name.upper()}" for name in ServeSettings.model_fields}


def flag_values(cmd: Command, args: list[str]) -> dict[str, object]:
    """The command's parameters that `args` set, by parameter name, as click
    would pass them (a repeatable option gives a list, a switch a bool)."""
    known = options(cmd)
    values: dict[str, object] = {}
    for flag, value in split_args(args):
        param = known.get(flag)
        if param is None:
            continue  # not the command's own: passed through (checked elsewhere)
        if param.is_flag:
            assert value is None, f"{flag} is a switch and takes no value"
            values[param.name] = flag in param.opts
        else:
            assert value is not None, f"{flag} needs a value: write {flag}=VALUE"
            if param.multiple:
                values.setdefault(param.name, []).append(value)
            else:
                values[param.name] = value
    return values


@contextmanager
def environment(env: dict[str, str | None]) -> Iterator[None]:
    """os.environ with exactly `env`'s LORAPLEX_* variables, restored afterwards."""
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith("LORAPLEX_")]:
            del os.environ[name]
        os.environ.update({k: v for k, v in env.items() if v is not None})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def serve_settings(env: dict[str, str | None], args: list[str]) -> ServeSettings:
    """What `loraplex serve ARGS` resolves in this environment (flags over env),
    built as serve/cli.py builds it; raises pydantic's ValidationError."""
    flags = flag_values(command("serve"), args)
    with environment(env):
        return ServeSettings(**flags)
