"""Rendering: the base's chat template, labels on assistant answers and their end of turn only."""

import pytest

from loraplex.trainer.data import Conversation, Message, read_data_file
from loraplex.trainer.errors import TemplateError
from loraplex.trainer.render import IGNORE, ChatRenderer, render_examples, show_example
from tests.trainer.conftest import DATA


def trained_runs(tokenizer, example) -> list[str]:
    """The decoded text of each contiguous run of trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


@pytest.mark.parametrize("file", ["chat.jsonl", "alpaca.jsonl", "prompt_completion.jsonl"])
def test_only_assistant_answers_and_their_end_of_turn_are_trained(tokenizer, file):
    renderer = ChatRenderer(tokenizer)
    data = read_data_file(DATA / file)
    for conversation in data.conversations:
        example = renderer.render(conversation)
        wanted = [f"{m.content}<|im_end|>" for m in conversation.messages if m.trained]
        assert trained_runs(tokenizer, example) == wanted
        # The text is exactly what vLLM's chat endpoint would render.
        served = tokenizer.apply_chat_template(
            [m.as_template_input() for m in conversation.messages], tokenize=False
        )
        assert tokenizer.decode(example.input_ids) == served


def test_the_newline_after_the_end_of_turn_is_not_trained(tokenizer):
    conversation = Conversation((Message("user", "hi"), Message("assistant", "yo", True)), "x:1")
    example = ChatRenderer(tokenizer).render(conversation)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert example.input_ids[-2:] == [end, tokenizer("\n").input_ids[0]]
    assert example.labels[-2:] == [end, IGNORE]


def test_weight_zero_answers_are_shown_but_not_trained(tokenizer):
    conversation = read_data_file(DATA / "chat.jsonl").conversations[2]
    example = ChatRenderer(tokenizer).render(conversation)
    assert "An apple.<|im_end|>" in tokenizer.decode(example.input_ids)
    assert trained_runs(tokenizer, example) == ["A pear.<|im_end|>"]


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    # Like templates that strip an earlier answer's reasoning: turn 1 renders
    # differently once turn 2 exists, so prefix rendering cannot find answers.
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' and not loop.last %}(earlier){% else %}{{ m.content }}"
        "{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rewriting = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    rewriting.chat_template = template
    conversation = Conversation(
        (
            Message("user", "a"),
            Message("assistant", "b", trained=True),
            Message("user", "c"),
            Message("assistant", "d", trained=True),
        ),
        "x:1",
    )
    with pytest.raises(TemplateError, match="does not render this conversation turn by turn"):
        ChatRenderer(rewriting).render(conversation)


DEVELOPER_LATER = (
    Message("system", "Be brief."),
    Message("user", "Name a fruit."),
    Message("developer", "Answer like a pirate."),
    Message("user", "Another one?"),
    Message("assistant", "Arr, a pear.", trained=True),
)


def test_developer_messages_become_one_system_message_for_a_template_without_the_role(tokenizer):
    # What vLLM's chat endpoint does for such a template (tests/serve/test_trained_as_served.py).
    example = ChatRenderer(tokenizer).render(Conversation(DEVELOPER_LATER, "x:1"))
    text = tokenizer.decode(example.input_ids)
    assert text.startswith("<|im_start|>system\nBe brief.\n\nAnswer like a pirate.<|im_end|>\n")
    assert "developer" not in text
    assert trained_runs(tokenizer, example) == ["Arr, a pear.<|im_end|>"]


def test_developer_messages_stay_in_place_for_a_template_that_names_the_role(tokenizer):
    knows_developer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    knows_developer.chat_template = tokenizer.chat_template.replace(
        "{% for message in messages %}",
        "{% for message in messages %}{% if message['role'] == 'developer' %}(dev) {% endif %}",
    )
    example = ChatRenderer(knows_developer).render(Conversation(DEVELOPER_LATER, "x:1"))
    text = knows_developer.decode(example.input_ids)
    assert "(dev) <|im_start|>developer\nAnswer like a pirate.<|im_end|>" in text
    assert trained_runs(knows_developer, example) == ["Arr, a pear.<|im_end|>"]


def test_a_tokenizer_without_chat_template_is_refused(tokenizer):
    plain = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        ChatRenderer(plain)


def test_show_example_marks_trained_tokens(tokenizer):
    conversation = read_data_file(DATA / "chat.jsonl").conversations[0]
    example = ChatRenderer(tokenizer).render(conversation)
    text = show_example(tokenizer, example)
    assert text.endswith("<|im_start|>assistant\n[[Paris.<|im_end|>]]\n")
    assert f"{len(example)} tokens, {example.trained_tokens} trained" in text.splitlines()[0]


def test_truncation_keeps_labels_aligned(tokenizer):
    conversation = Conversation(
        (Message("user", "q"), Message("assistant", "a " * 40, True)), "x:1"
    )
    examples, _, counts = render_examples(
        ChatRenderer(tokenizer), [conversation], max_length=30, too_long="truncate"
    )
    (example,) = examples
    assert len(example) == 30 and counts == {"dropped": 0, "truncated": 1, "refused": 0}
    assert all(
        label in (IGNORE, token)
        for token, label in zip(example.input_ids, example.labels, strict=True)
    )
    assert example.trained_tokens > 0


def test_a_conversation_the_template_refuses_is_a_record_problem(tokenizer):
    strict = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    strict.chat_template = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('system messages are not supported') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    conversations = read_data_file(DATA / "chat.jsonl").conversations[:2]  # 1st has a system turn
    examples, problems, counts = render_examples(
        ChatRenderer(strict), conversations, max_length=256, too_long="drop"
    )
    assert len(examples) == 1 and counts["refused"] == 1
    assert str(problems[0]) == (
        f"{DATA / 'chat.jsonl'}:1: the chat template refuses it: system messages are not supported"
    )
