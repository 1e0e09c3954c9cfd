"""The records in the store: hidden from adapter listings, atomic updates, events in order."""

import threading

from loraplex.adapters import Store
from loraplex.jobs import Caller, FineTuningAPI, JobStore
from loraplex.jobs.records import EventRecord
from tests.jobs.conftest import chat_lines

ME = Caller("team-a")


def test_job_records_are_hidden_from_adapter_listings(api: FineTuningAPI, job_store: JobStore):
    upload = api.upload(ME, "train.jsonl", "fine-tune", chat_lines(12))
    api.create_job(ME, {"model": "tiny", "training_file": upload.id})
    adapters = Store(job_store.backend)
    assert adapters.list_names() == []
    assert adapters.catalog() == {}
    assert job_store.backend.children("") == []  # `.fine-tuning` is a hidden name
    assert job_store.backend.walk("") == []
    assert len(job_store.job_ids()) == 1


def test_concurrent_updates_lose_nothing(api: FineTuningAPI, job_store: JobStore):
    upload = api.upload(ME, "train.jsonl", "fine-tune", chat_lines(12))
    job = api.create_job(ME, {"model": "tiny", "training_file": upload.id, "metadata": {}})

    def add_keys(prefix: str) -> None:
        for i in range(8):

            def change(j, key=f"{prefix}{i}"):
                j.metadata = {**(j.metadata or {}), key: "x"}
                return j

            job_store.update_job(job.id, change)

    threads = [threading.Thread(target=add_keys, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(job_store.job(job.id).metadata) == 16


def test_events_from_racing_writers_keep_every_one_in_order(api, job_store: JobStore):
    upload = api.upload(ME, "train.jsonl", "fine-tune", chat_lines(12))
    job = api.create_job(ME, {"model": "tiny", "training_file": upload.id})
    before = len(job_store.events(job.id))

    def write(who: str) -> None:
        for i in range(6):
            job_store.add_event(job.id, f"{who}{i}")

    threads = [threading.Thread(target=write, args=(w,)) for w in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events: list[EventRecord] = job_store.events(job.id)
    assert len(events) == before + 12
    assert len({e.id for e in events}) == len(events)
    assert [e.id for e in events] == sorted(e.id for e in events)
    for who in "xy":
        mine = [e.message for e in events if e.message.startswith(who)]
        assert mine == [f"{who}{i}" for i in range(6)]
