"""One offline vLLM engine answering each request alone, then all of them in one batch.

Run as a subprocess by test_cpu_lora_ops_engine.py, so that the
`LORAPLEX_CPU_LORA_OPS` it is given applies to the engine core process too.
Prints one line on stdout, `RESULT ` and then JSON:
`{"solo": [[token ids], ...], "mixed": [[token ids], ...]}`, request order.

    python -m tests.serve.cpu_lora_ops_engine_run MODEL_DIR REQUESTS_JSON
    (REQUESTS_JSON: {"adapters": {name: path}, "requests": [[model or null, prompt], ...]})
"""

import json
import sys


def main(model_dir: str, requests_json: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    spec = json.loads(requests_json)
    adapters = {
        name: LoRARequest(name, i + 1, path)
        for i, (name, path) in enumerate(spec["adapters"].items())
    }
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enable_lora=True,
        max_loras=2,
        max_lora_rank=16,
        max_model_len=512,
        enforce_eager=True,
        seed=0,
    )
    params = SamplingParams(temperature=0, max_tokens=16)
    prompts = [prompt for _, prompt in spec["requests"]]
    loras = [adapters[name] if name else None for name, _ in spec["requests"]]

    def token_ids(outputs) -> list[list[int]]:
        return [list(o.outputs[0].token_ids) for o in outputs]

    solo = [
        token_ids(llm.generate([p], params, lora_request=[lora], use_tqdm=False))[0]
        for p, lora in zip(prompts, loras, strict=True)
    ]
    mixed = token_ids(llm.generate(prompts, params, lora_request=loras, use_tqdm=False))
    print("RESULT", json.dumps({"solo": solo, "mixed": mixed}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
