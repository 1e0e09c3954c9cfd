"""Render conversations with the base tokenizer's own chat template, and mask the labels.

The model is trained on exactly the text vLLM will show it: the tokenizer's
`chat_template` (what vLLM's chat endpoint applies), tokenized without extra
special tokens (vLLM's chat default). Only the assistant's answers and their
end-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...) carry labels, so the
model learns to stop; prompts, role headers and the newline after the
end-of-turn token do not.

Assistant spans are found by rendering prefix by prefix: the text of
`messages[:i]` with the generation prompt ends where answer i starts, and the
text of `messages[:i+1]` ends where it stops. This works for any template
that renders a conversation as the concatenation of its turns (ChatML,
Llama 3, Mistral, Gemma, ...); one that does not (e.g. one that rewrites
earlier turns) is refused with a `TemplateError` instead of being trained
with wrong labels.

A `developer` message (OpenAI's name for the system prompt of newer models)
reaches the template as vLLM's chat endpoint passes it (`as_served`): as is
when the template names that role, else as a system message, all system
messages merged into one at the start.
"""

from dataclasses import dataclass

import jinja2

from loraplex.trainer.data import Conversation, Message, Problem
from loraplex.trainer.errors import TemplateError

IGNORE = -100  # label of a token that is not trained (PyTorch's cross-entropy ignore_index)
# What a chat template or tokenizer raises on one conversation it cannot render.
RENDER_REFUSALS = (jinja2.TemplateError, ValueError, TypeError, IndexError, KeyError)


@dataclass(frozen=True)
class Example:
    """One tokenized conversation: ids, and labels (the id where trained, else IGNORE)."""

    input_ids: list[int]
    labels: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


class ChatRenderer:
    """Turns `Conversation`s into `Example`s with one tokenizer's chat template."""

    def __init__(self, tokenizer) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "the base model's tokenizer has no chat template; vLLM could not serve chat "
                "with it either"
            )
        if not getattr(tokenizer, "is_fast", False):
            raise TemplateError("the base model needs a fast tokenizer (token offsets)")
        self.tokenizer = tokenizer
        self.special_ids = set(tokenizer.all_special_ids) | {
            i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special
        }

    def _text(self, messages: tuple[Message, ...], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [m.as_template_input() for m in messages],
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )

    def assistant_spans(self, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
        """The full text and the character spans of the trained assistant turns."""
        messages = as_served(conversation.messages, str(self.tokenizer.chat_template))
        full = self._text(messages, generation_prompt=False)
        spans = []
        for i, message in enumerate(messages):
            if not message.trained:
                continue
            prompt = self._text(messages[:i], generation_prompt=True)
            upto = self._text(messages[: i + 1], generation_prompt=False)
            if not (upto.startswith(prompt) and full.startswith(upto)):
                raise TemplateError(
                    f"{conversation.source}: the chat template does not render this conversation "
                    "turn by turn (an earlier turn changes when later ones are added), so the "
                    "assistant's tokens cannot be found safely"
                )
            spans.append((len(prompt), len(upto)))
        return full, spans

    def render(self, conversation: Conversation) -> Example:
        text, spans = self.assistant_spans(conversation)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        labels = [IGNORE] * len(ids)
        for start, end in spans:
            inside = [t for t, (a, b) in enumerate(offsets) if a >= start and b <= end and b > a]
            for t in self._through_end_of_turn(ids, inside):
                labels[t] = ids[t]
        return Example(input_ids=ids, labels=labels, source=conversation.source)

    def _through_end_of_turn(self, ids: list[int], span: list[int]) -> list[int]:
        """The span's tokens up to and including its last special token (the end of turn).

        A template may add text after the end-of-turn token (ChatML's "\\n"): that
        text belongs to the template, not to the answer, and is never generated.
        """
        ends = [k for k, t in enumerate(span) if ids[t] in self.special_ids]
        return span[: ends[-1] + 1] if ends else span


def as_served(messages: tuple[Message, ...], chat_template: str) -> tuple[Message, ...]:
    """The messages as vLLM's chat endpoint hands them to `chat_template`.

    vLLM (renderers/hf.py) turns `developer` messages into `system` ones for a
    template that does not name the role, then merges every system message into
    one, first, joined by blank lines; training must see the same text.
    """
    if not any(m.role == "developer" for m in messages):
        return messages
    if '"developer"' in chat_template or "'developer'" in chat_template:
        return messages
    system = [m.content for m in messages if m.role in ("system", "developer")]
    rest = tuple(m for m in messages if m.role not in ("system", "developer"))
    return (Message("system", "\n\n".join(c for c in system if c)), *rest)


def render_examples(
    renderer: ChatRenderer,
    conversations: list[Conversation],
    max_length: int,
    too_long: str,
) -> tuple[list[Example], list[Problem], dict[str, int]]:
    """Render all; drop or truncate examples over `max_length` tokens, with counts.

    A conversation the template or tokenizer refuses (templates raise on roles
    that do not alternate, transformers on an empty prefix, ...) is a problem
    of that record, not of the run.
    """
    examples, problems = [], []
    counts = {"dropped": 0, "truncated": 0, "refused": 0}
    for conversation in conversations:
        try:
            example = renderer.render(conversation)
        except RENDER_REFUSALS as exc:  # e.g. "roles must alternate user/assistant"
            reason = " ".join(str(exc).split()) or type(exc).__name__
            problems.append(Problem(conversation.source, f"the chat template refuses it: {reason}"))
            counts["refused"] += 1
            continue
        if len(example) > max_length:
            over = f"{len(example)} tokens, longer than max_length {max_length}"
            if too_long == "truncate":
                example = Example(
                    example.input_ids[:max_length], example.labels[:max_length], example.source
                )
                if example.trained_tokens:
                    counts["truncated"] += 1
                    problems.append(Problem(example.source, f"{over}: truncated"))
                    examples.append(example)
                    continue
                over += " and no trained token left after truncation"
            counts["dropped"] += 1
            problems.append(Problem(example.source, f"{over}: dropped"))
            continue
        examples.append(example)
    return examples, problems, counts


def show_example(tokenizer, example: Example, color: bool = False) -> str:
    """The example's text with trained tokens marked: [[...]] (or green when `color`)."""
    start, end = ("\x1b[42m", "\x1b[0m") if color else ("[[", "]]")
    pieces, run, run_trained = [], [], None
    for token, label in zip(example.input_ids, example.labels, strict=True):
        trained = label != IGNORE
        if run and trained != run_trained:
            pieces.append(_piece(tokenizer, run, run_trained, start, end))
            run = []
        run.append(token)
        run_trained = trained
    if run:
        pieces.append(_piece(tokenizer, run, run_trained, start, end))
    header = (
        f"{example.source}: {len(example)} tokens, {example.trained_tokens} trained "
        f"(marked {start}like this{end})\n"
    )
    return header + "".join(pieces)


def _piece(tokenizer, ids: list[int], trained: bool, start: str, end: str) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return f"{start}{text}{end}" if trained else text
