"""The estimates as text tables (the CLI's output); `--json` prints `to_dict()` instead."""

from loraplex.estimate.results import ServeEstimate, TrainEstimate

WIDTH = 46


def size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _rows(items) -> list[str]:
    return [f"  {i.what:<{WIDTH}} {size(i.bytes):>12}   {i.how}" for i in items]


def train_table(e: TrainEstimate) -> str:
    s = e.shapes
    ckpt = "on" if e.gradient_checkpointing else "off"
    lines = [
        f"training estimate: {e.base_model} ({e.model_type}), {e.method}, r={e.lora_r} "
        f"({e.lora_params:,} LoRA params), checkpointing {ckpt}, on {e.device}",
        f"largest micro-batch: {s.rows} rows, {s.tokens:,} tokens, "
        f"{s.trained_tokens:,} trained ({'from the data' if s.source == 'data' else 'full rows'})",
        "",
        *_rows(e.items),
        f"  {'peak per device':<{WIDTH}} {size(e.peak_bytes):>12}",
    ]
    if e.ranks > 1:
        lines[0] += f", {e.ranks} ranks ({e.strategy})"
        lines[-1] = f"  {'peak per rank (' + e.strategy + ')':<{WIDTH}} {size(e.peak_bytes):>12}"
    if e.device_memory_bytes is not None:
        verdict = "fits" if e.fits else "DOES NOT FIT"
        lines.append(f"  {'device memory':<{WIDTH}} {size(e.device_memory_bytes):>12}   {verdict}")
    per = e.activation_bytes_per_token
    lines += [
        "",
        f"activations per token: {size(per['with_checkpointing'])} with checkpointing, "
        f"{size(per['without_checkpointing'])} without",
    ]
    if s.run_tokens:
        lines.append(
            f"run: {s.steps} steps, {s.micro_batches} micro-batches, {s.run_tokens:,} tokens "
            f"({s.run_trained_tokens:,} trained)"
        )
    if e.time is not None and e.time.seconds:
        lines.append(
            f"time: {duration(e.time.seconds)} ({e.time.tokens_per_second:,.0f} trained "
            f"tokens/s) — {e.time.how}"
        )
    lines += [f"note: {n}" for n in e.notes]
    return "\n".join(lines)


def serve_table(e: ServeEstimate) -> str:
    lines = [
        f"serving estimate: {e.base_model} ({e.model_type}), {e.quantization}, {e.dtype}, "
        f"max_loras {e.max_loras} × rank {e.max_lora_rank}, on {e.device}",
        "",
        *_rows(e.items),
        "",
        f"KV cache per token: {size(e.kv_bytes_per_token)}",
        f"KV capacity: {e.kv_tokens:,} tokens = {e.concurrent_sequences:,.2f} sequences "
        f"of {e.max_model_len:,} tokens",
    ]
    if not e.fits:
        lines.append("DOES NOT FIT: not one sequence of max_model_len fits in the KV cache")
    lines += [f"note: {n}" for n in e.notes]
    return "\n".join(lines)
