"""Fixtures for the deployment tests: each kustomization built once per session."""

import pytest

from tests.deploy.manifests import TARGETS, Stack, build, make_stacks


@pytest.fixture(scope="session")
def builds() -> dict[str, list[dict]]:
    """`kubectl kustomize k8s/<target>` for every target, parsed."""
    return {target: build(target) for target in TARGETS}


@pytest.fixture(scope="session")
def stacks(builds) -> dict[str, Stack]:
    return make_stacks(builds)


@pytest.fixture(params=["gpu", "cpu"])
def stack(request, stacks) -> Stack:
    return stacks[request.param]
