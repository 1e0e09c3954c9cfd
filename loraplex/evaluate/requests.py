"""The two requests evaluation makes of a model: score a conversation, answer a prompt.

- `answer_loss`: the conversation's token ids go to `/v1/completions` with
  `prompt_logprobs`, so the server's own forward pass gives the log-probability
  of every token; the loss sums them over the tokens the trainer trains (the
  labels of render.py). No generation is needed beyond the one token the API
  insists on. This needs vLLM (or a server with the same extension).
- `greedy_answer`: the prompt messages to `/v1/chat/completions`, temperature
  0, so the server applies its own chat template, as for any client.
"""

import openai

from loraplex.evaluate.data import EvalExample
from loraplex.trainer.render import IGNORE


class BadResponse(Exception):
    """A response without what was asked for (e.g. no prompt logprobs)."""


async def answer_loss(
    client: openai.AsyncOpenAI, model: str, example: EvalExample
) -> tuple[float, int]:
    """(sum of the answer tokens' negative log-likelihoods, their count)."""
    response = await client.completions.create(
        model=model,
        prompt=list(example.input_ids),
        max_tokens=1,
        temperature=0,
        extra_body={"prompt_logprobs": 1},
    )
    choice = response.choices[0]
    logprobs = getattr(choice, "prompt_logprobs", None) or (choice.model_extra or {}).get(
        "prompt_logprobs"
    )
    if not logprobs or len(logprobs) != len(example.input_ids):
        raise BadResponse("no prompt_logprobs in the response (is the endpoint vLLM?)")
    nll, tokens = 0.0, 0
    for position, label in enumerate(example.labels):
        if label == IGNORE:
            continue
        entry = (logprobs[position] or {}).get(str(label))
        if entry is None:
            raise BadResponse(f"no logprob for token {label} at position {position}")
        nll -= entry["logprob"]
        tokens += 1
    return nll, tokens


async def greedy_answer(
    client: openai.AsyncOpenAI, model: str, example: EvalExample, max_tokens: int
) -> tuple[str, int | None]:
    """(the answer, its tokens as the server counted them)."""
    response = await client.chat.completions.create(
        model=model,
        messages=list(example.messages),
        max_tokens=max_tokens,
        temperature=0,
        seed=0,
    )
    tokens = response.usage.completion_tokens if response.usage else None
    return response.choices[0].message.content or "", tokens
