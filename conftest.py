"""Shared pytest fixtures, one module per real component the tests start.

Each module under tests/fixtures owns one kind of fixture (models, the S3
server, the engine) with the widest sensible scope, so that slow things —
building the tiny model, starting SeaweedFS, starting vLLM — happen once per
test session.
"""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.s3",
    "tests.fixtures.engine",
]
