"""The API's rules without a server: request checks, tenancy, pages, limits, cancel."""

import pytest

from loraplex.adapters import open_store
from loraplex.jobs import (
    Caller,
    FineTuningAPI,
    InvalidRequest,
    JobStore,
    LimitReached,
    Limits,
    NotFound,
)
from loraplex.jobs.pages import page
from tests.jobs.conftest import chat_lines

A, B, ADMIN = Caller("team-a"), Caller("team-b"), Caller("ops", admin=True)


@pytest.fixture
def local_api(tmp_path) -> FineTuningAPI:
    store = JobStore(open_store(str(tmp_path / "store")).backend)
    return FineTuningAPI(
        store, "tiny", Limits(max_files_per_tenant=3, max_queued_jobs_per_tenant=2)
    )


@pytest.fixture
def upload(local_api: FineTuningAPI):
    return local_api.upload(A, "train.jsonl", "fine-tune", chat_lines(12))


@pytest.mark.parametrize(
    ("request_fields", "param", "words"),
    [
        ({"model": "gpt-4o-mini"}, "model", "fine-tunes its base model 'tiny'"),
        ({"method": {"type": "dpo", "dpo": {}}}, "method.type", "'dpo' is not supported"),
        ({"method": {"type": "reinforcement"}}, "method.type", "not supported"),
        ({"suffix": "a:b"}, "suffix", "1-64 characters"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs", "from 1 to 50"),
        ({"hyperparameters": {"batch_size": 1.5}}, "hyperparameters.batch_size", "an integer"),
        ({"seed": "x"}, "seed", "integer"),
        ({"metadata": {"k": 1}}, "metadata", "string values"),
        ({"training_file": "file-missing"}, "training_file", "no such file"),
    ],
)
def test_bad_job_requests_are_400s_naming_the_field(
    local_api, upload, request_fields, param, words
):
    request = {"model": "tiny", "training_file": upload.id, **request_fields}
    with pytest.raises(InvalidRequest, match=words) as caught:
        local_api.create_job(A, request)
    assert caught.value.param == param


def test_auto_and_values_and_the_deprecated_field_are_read(local_api, upload):
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    job = local_api.create_job(A, {"model": "tiny", "training_file": upload.id, "method": method})
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == "auto"
    assert job.public()["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    old = local_api.create_job(
        A, {"model": "tiny", "training_file": upload.id, "hyperparameters": {"batch_size": 4}}
    )
    assert old.hyperparameters.batch_size == 4 and old.status == "validating_files"
    assert old.file_sha256 == {upload.id: upload.sha256}


def test_another_tenant_gets_not_found_and_an_admin_sees_all(local_api, upload):
    job = local_api.create_job(A, {"model": "tiny", "training_file": upload.id})
    for get in (
        lambda c: local_api.file(c, upload.id),
        lambda c: local_api.job(c, job.id),
        lambda c: local_api.events(c, job.id),
        lambda c: local_api.cancel(c, job.id),
    ):
        with pytest.raises(NotFound):
            get(B)
        get(ADMIN)
    assert local_api.files(B) == [] and local_api.jobs(B) == []
    with pytest.raises(InvalidRequest, match="no such file"):  # B cannot use A's file
        local_api.create_job(B, {"model": "tiny", "training_file": upload.id})
    assert [f.id for f in local_api.files(ADMIN)] == [upload.id]


def test_limits_on_files_and_waiting_jobs(local_api, upload):
    for _ in range(2):
        local_api.upload(A, "more.jsonl", "fine-tune", chat_lines(12))
    with pytest.raises(LimitReached, match="3 files"):
        local_api.upload(A, "one-too-many.jsonl", "fine-tune", chat_lines(12))
    local_api.upload(B, "theirs.jsonl", "fine-tune", chat_lines(12))  # per tenant
    for _ in range(2):
        local_api.create_job(A, {"model": "tiny", "training_file": upload.id})
    with pytest.raises(LimitReached, match="2 jobs waiting"):
        local_api.create_job(A, {"model": "tiny", "training_file": upload.id})
    with pytest.raises(InvalidRequest, match="only 'fine-tune'"):
        local_api.upload(A, "x.jsonl", "assistants", b"{}")


def test_pages_and_metadata_filter(local_api, upload):
    local_api.limits = Limits(max_queued_jobs_per_tenant=10)
    ids = [
        local_api.create_job(
            A, {"model": "tiny", "training_file": upload.id, "metadata": {"n": str(i % 2)}}
        ).id
        for i in range(5)
    ]
    first = page(local_api.jobs(A), after=None, limit=2)
    assert [j["id"] for j in first["data"]] == ids[::-1][:2]  # newest first
    assert first["has_more"] and first["last_id"] == ids[3]
    second = page(local_api.jobs(A), after=first["last_id"], limit=10)
    assert [j["id"] for j in second["data"]] == ids[::-1][2:] and not second["has_more"]
    odd = local_api.jobs(A, metadata={"n": "1"})
    assert sorted(j.id for j in odd) == [ids[1], ids[3]]


def test_cancel_twice_is_harmless_and_a_finished_job_refuses(local_api, upload):
    job = local_api.create_job(A, {"model": "tiny", "training_file": upload.id})
    assert local_api.cancel(A, job.id).status == "cancelled"
    assert local_api.cancel(A, job.id).status == "cancelled"
    assert [e.message for e in local_api.events(A, job.id)].count("Job cancelled") == 1

    def succeed(j):
        j.status = "succeeded"
        return j

    other = local_api.create_job(A, {"model": "tiny", "training_file": upload.id})
    local_api.store.update_job(other.id, succeed)
    with pytest.raises(InvalidRequest, match="already succeeded"):
        local_api.cancel(A, other.id)
