"""Turn loraplex's settings into vLLM's own server arguments.

loraplex does not re-declare vLLM's options: it builds an argv for vLLM's
argument parser from the few settings it owns and appends whatever the user
passed through unchanged (`loraplex serve ... --dtype float32`).
"""

from argparse import Namespace

from loraplex.serve.settings import ServeSettings


def vllm_argv(settings: ServeSettings, passthrough: list[str]) -> list[str]:
    argv = [
        "--model", settings.base_model,
        "--served-model-name", settings.base_name(),
        "--host", settings.host,
        "--port", str(settings.port),
        "--enable-lora",
        "--max-loras", str(settings.max_loras),
        "--max-lora-rank", str(settings.max_lora_rank),
        "--max-cpu-loras", str(settings.max_cpu_loras),
    ]  # fmt: skip
    if settings.scheduler == "loraplex" and "--scheduler-cls" not in passthrough:
        from loraplex.serve.scheduling import SCHEDULER_CLS

        argv += ["--scheduler-cls", SCHEDULER_CLS]
    if settings.quantization != "none":
        argv += ["--quantization", settings.quantization]
    if "--shutdown-timeout" not in passthrough:
        # vLLM's default (0) aborts running requests on SIGTERM; drain instead.
        argv += ["--shutdown-timeout", str(settings.drain_seconds)]
    return argv + passthrough


def parse_vllm_args(argv: list[str]) -> Namespace:
    """Parse with vLLM's own server parser, so every vLLM option works."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="loraplex serve"))
    args = parser.parse_args(argv)
    validate_parsed_serve_args(args)
    return args
