"""Turn loraplex's settings into vLLM's own server arguments.

loraplex does not re-declare vLLM's options: it builds an argv for vLLM's
argument parser from the few settings it owns and appends whatever the user
passed through unchanged (`loraplex serve ... --dtype float32`).
"""

import logging
from argparse import Namespace
from pathlib import Path

from loraplex.serve.settings import ServeSettings
from loraplex.serve.slots import DEFAULT_BUDGET_MIB, SlotPlan, describe, plan_slots

logger = logging.getLogger(__name__)


def vllm_argv(settings: ServeSettings, passthrough: list[str]) -> list[str]:
    argv = [
        "--model", settings.base_model,
        "--served-model-name", settings.base_name(),
        "--host", settings.host,
        "--port", str(settings.port),
        "--enable-lora",
        "--max-lora-rank", str(settings.max_lora_rank),
        "--max-cpu-loras", str(settings.max_cpu_loras),
    ]  # fmt: skip
    if settings.max_loras is not None:
        argv += ["--max-loras", str(settings.max_loras)]
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


def size_lora_slots(settings: ServeSettings, args: Namespace, passthrough: list[str]) -> SlotPlan:
    """Set `args.max_loras` (and room for it in the CPU tier) unless given; log the choice."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform
    from vllm.usage.usage_lib import UsageContext

    max_num_seqs = args.max_num_seqs
    if max_num_seqs is None:
        world = args.tensor_parallel_size * args.pipeline_parallel_size
        defaults = EngineArgs.get_batch_defaults(world)[1]
        max_num_seqs = defaults.get(UsageContext.OPENAI_API_SERVER, 128)
    explicit = args.max_loras if "--max-loras" in passthrough else settings.max_loras
    budget = (
        settings.lora_slot_budget_mib
        or DEFAULT_BUDGET_MIB["cpu" if current_platform.is_cpu() else "gpu"]
    )
    plan = plan_slots(
        model_dir=Path(args.model),
        max_rank=settings.max_lora_rank,
        dtype=args.dtype,
        max_num_seqs=max_num_seqs,
        budget_mib=budget,
        explicit=explicit,
        fused_cpu_copy=current_platform.is_cpu() and settings.cpu_lora_ops == "loraplex",
    )
    args.max_loras = plan.max_loras
    # vLLM needs the CPU tier to hold at least one adapter per slot.
    args.max_cpu_loras = max(args.max_cpu_loras or 0, plan.max_loras)
    logger.info(describe(plan, max_num_seqs, budget))
    return plan
