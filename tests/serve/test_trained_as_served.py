"""The trainer renders a conversation into the very tokens vLLM's chat endpoint
serves for it (the gateway's `/tokenize`), developer messages included."""

import pytest

from loraplex.trainer.data import Conversation, Message
from loraplex.trainer.render import ChatRenderer
from tests.fixtures.engine import BASE_NAME

CONVERSATIONS = {
    "system": [("system", "Be brief."), ("user", "Name a fruit.")],
    "developer first": [("developer", "Answer like a pirate."), ("user", "Name a fruit.")],
    "system and developer later": [
        ("system", "Be brief."),
        ("user", "Name a fruit."),
        ("assistant", "A pear."),
        ("developer", "Now answer like a pirate."),
        ("user", "Another one?"),
    ],
}


@pytest.fixture(scope="module")
def renderer(tiny_model_dir):
    from loraplex.trainer.model import load_tokenizer

    return ChatRenderer(load_tokenizer(tiny_model_dir))


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_a_prompt_is_trained_on_the_tokens_the_server_renders(gateway, http, renderer, name):
    messages = [{"role": role, "content": text} for role, text in CONVERSATIONS[name]]
    body = {"model": BASE_NAME, "messages": messages, "add_generation_prompt": True}
    served = http.post("/tokenize", json=body)
    assert served.status_code == 200, served.text
    # A trained answer's prompt is the conversation so far with the generation prompt.
    answer = Message("assistant", "Arr, a pear.", trained=True)
    conversation = Conversation((*(Message(r, t) for r, t in CONVERSATIONS[name]), answer), "x:1")
    text, [(start, _)] = renderer.assistant_spans(conversation)
    prompt_ids = renderer.tokenizer(text[:start], add_special_tokens=False)["input_ids"]
    assert prompt_ids == served.json()["tokens"]
