"""Clients for the session gateway: the official `openai` client, sync and async."""

import httpx
import openai
import pytest


@pytest.fixture(scope="session")
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def async_client(gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def http(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.base_url, timeout=60) as c:
        yield c
