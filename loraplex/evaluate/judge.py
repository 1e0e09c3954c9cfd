"""Pairwise judging: which of two answers to the same prompt is better, asked of a judge model.

Each pair is judged twice, once in each order, to cancel the judge's
position bias (Zheng et al., "Judging LLM-as-a-judge", MT-Bench): a model
wins a pair only if it is preferred in both orders, loses only if the other
is, and anything else (a tie, or the two orders disagreeing) is a tie. So a
judge that always prefers the first answer scores every pair a tie.

The judge must answer exactly `A`, `B` or `tie`. Where the judge endpoint is
vLLM, `structured_outputs` {"choice": [...]} constrains it to those; other
endpoints are asked in words. A verdict in any other form is *invalid*:
counted and reported with a sample of what was said, never guessed at. A
request that fails (timeout, HTTP error) is counted as failed.
"""

from dataclasses import dataclass, field

import openai

from loraplex.evaluate.endpoint import request_error

CHOICES = ("A", "B", "tie")
PROMPT = """You are judging two answers to the same request. Say which answer is better: \
more helpful, correct and faithful to the request.

[Request]
{question}

[Answer A]
{a}

[Answer B]
{b}

Reply with exactly one word: A if answer A is better, B if answer B is better, tie if \
they are equally good."""


@dataclass(frozen=True)
class JudgeSettings:
    endpoint: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    constrain: bool | None = None  # None: when the judge endpoint is vLLM
    extra_body: dict = field(default_factory=dict)  # merged into every judge request


@dataclass(frozen=True)
class Verdict:
    choice: str | None  # "A", "B" or "tie"; None when invalid or failed
    raw: str = ""  # what the judge said (invalid) or why the request failed
    failed: bool = False


def parse_verdict(text: str) -> str | None:
    """`A`, `b.`, `"Tie"`, `[[B]]` → the choice; anything else → None (invalid)."""
    word = text.strip().strip("[]()\"'*`.:! \n").lower()
    return {"a": "A", "b": "B", "tie": "tie"}.get(word)


async def ask(
    client: openai.AsyncOpenAI, settings: JudgeSettings, constrain: bool, question, a, b
) -> Verdict:
    body = {"structured_outputs": {"choice": list(CHOICES)}} if constrain else {}
    try:
        response = await client.chat.completions.create(
            model=settings.model,
            messages=[{"role": "user", "content": PROMPT.format(question=question, a=a, b=b)}],
            max_tokens=8,
            temperature=0,
            extra_body={**body, **settings.extra_body},
        )
    except openai.APIError as exc:
        return Verdict(None, request_error(exc), failed=True)
    text = response.choices[0].message.content or ""
    choice = parse_verdict(text)
    return Verdict(choice, "" if choice else text[:120])


def combine(candidate_first: Verdict, candidate_second: Verdict) -> str | None:
    """The pair's outcome for the candidate: "win", "tie" or "loss"; None if not both valid.

    `candidate_first` judged (candidate, baseline) as (A, B); `candidate_second`
    judged (baseline, candidate).
    """
    first, second = candidate_first.choice, candidate_second.choice
    if first is None or second is None:
        return None
    if first == "A" and second == "B":
        return "win"
    if first == "B" and second == "A":
        return "loss"
    return "tie"
