"""One claimed job, start to end: fetch its files (and its last checkpoint), run the
trainer as a child, turn its metrics and checkpoints into events, heartbeat,
then publish and succeed, or stop (cancelled, lease lost), or fail.

Nothing is published unless the job is still this worker's after the trainer
exited: the job is first marked `publishing` by a compare-and-swap (after
which a cancel no longer applies), then the adapter is published, then the
job succeeds.
"""

import json
import logging
import shutil
import time
from pathlib import Path

from loraplex.adapters import AdapterError, Store, StoreUnavailable
from loraplex.jobs import JobStore, names, queue
from loraplex.jobs.records import CheckpointRecord, JobError, JobRecord
from loraplex.jobs.store import JOBS
from loraplex.worker import trainer_process as child
from loraplex.worker.publish import publish_run, results_csv, results_file
from loraplex.worker.settings import WorkerSettings

log = logging.getLogger("loraplex.worker")


class JobRun:
    def __init__(self, jobs: JobStore, adapters: Store, settings: WorkerSettings, job: JobRecord):
        self.jobs, self.adapters, self.settings, self.job = jobs, adapters, settings, job
        self.dir = settings.workdir / job.id / f"attempt-{job.attempt}"
        self.run_dir = self.dir / "run"
        self.resume_key = f"{JOBS}/{job.id}/resume"
        self.metrics: list[dict] = []
        self.kept: dict[int, Path] = {}  # step → a copy of that checkpoint's LoRA weights
        self.uploaded_step = 0
        self.plan_steps: int | None = None

    @property
    def fine_tuned_model(self) -> str:
        j = self.job
        return names.fine_tuned_model(j.model, j.tenant, j.user_provided_suffix, j.id)

    def execute(self) -> JobRecord:
        self.prepare()
        resume = self.download_checkpoint()
        command = child.train_command(self.job, self.settings, resume)
        log.info("job %s: %s", self.job.id, " ".join(command))
        process = child.start(command, self.dir)
        tail = child.MetricsTail(self.run_dir / "metrics.jsonl")
        try:
            taken = self.watch(process, tail)
        finally:
            child.stop(process)
        if taken is not None:
            return taken  # cancelled, or no longer this worker's: nothing more to do
        self.follow(tail)
        if process.returncode != 0:
            message = child.failure_message(self.dir)
            code = "invalid_training_file" if "training.jsonl" in message else "training_failed"
            return queue.fail(
                self.jobs, self.job.id, JobError(code=code, message=message),
                expect_worker=self.settings.worker_id,
            )  # fmt: skip
        return self.finish()

    def watch(self, process, tail: child.MetricsTail) -> JobRecord | None:
        """Follow the trainer and heartbeat until it exits (None), or until the job is
        no longer this worker's (cancelled, taken back): then stop it, return the job."""
        beat_every = self.settings.lease_seconds / 4
        last_beat = time.monotonic()
        while process.poll() is None:
            time.sleep(0.2)
            try:
                self.follow(tail)
                if time.monotonic() - last_beat < beat_every:
                    continue
                current = queue.heartbeat(
                    self.jobs, self.job.id, self.settings.worker_id, self.settings.lease_seconds
                )
                last_beat = time.monotonic()
            except StoreUnavailable as exc:  # keep training; a lasting outage ends the lease
                log.warning("job %s: the store did not answer: %s", self.job.id, exc)
                continue
            if not queue.owns(current, self.settings.worker_id):
                log.info("job %s is %s: stopping its trainer", self.job.id, current.status)
                child.stop(process)
                return current
        return None

    def prepare(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "training.jsonl").write_bytes(self.jobs.file_content(self.job.training_file))
        if self.job.validation_file:
            content = self.jobs.file_content(self.job.validation_file)
            (self.dir / "validation.jsonl").write_bytes(content)

    # -- while it runs -------------------------------------------------------------

    def follow(self, tail: child.MetricsTail) -> None:
        for line in tail.read():
            if line.get("event") == "start":
                self.note_plan(line)
            else:
                self.metrics.append(line)
                total = self.plan_steps
                self.jobs.add_event(
                    self.job.id, f"Step {line['step']}/{total}: training loss={line['train_loss']}",
                    type="metrics", data={**line, "total_steps": total},
                )  # fmt: skip
        self.upload_new_checkpoint()

    def note_plan(self, start: dict) -> None:
        """The trainer's resolved plan: `auto` hyperparameters become the values it uses."""
        self.plan_steps = start["total_steps"]

        def resolved(job: JobRecord) -> JobRecord | None:
            if not queue.owns(job, self.settings.worker_id):
                return None
            job.hyperparameters.batch_size = int(start["batch_size"])
            job.hyperparameters.n_epochs = int(start["n_epochs"])
            job.hyperparameters.learning_rate_multiplier = child.resolved_multiplier(job)
            return job

        self.job = self.jobs.update_job(self.job.id, resolved)
        resumed = start.get("resumed_at_step") or 0
        where = f" from step {resumed}" if resumed else ""
        self.jobs.add_event(
            self.job.id, f"Fine-tuning job started{where}: {start['total_steps']} steps",
            data={k: v for k, v in start.items() if k != "event"},
        )  # fmt: skip

    def upload_new_checkpoint(self) -> None:
        """Every checkpoint the trainer wrote since the last call, oldest first: to the
        store (for a resume anywhere), as a checkpoint object and as an event. A fast
        trainer can write two between two calls; both count."""
        folder = self.run_dir / "checkpoints"
        steps = sorted(
            int(p.name.removeprefix("step-"))
            for p in (folder.iterdir() if folder.is_dir() else [])
            if p.name.startswith("step-")
        )
        # Only checkpoints whose steps were all reported as events: a job resumed from
        # a checkpoint reports the steps after it, so a later one would leave a gap.
        reported = max((m["step"] for m in self.metrics), default=0)
        for step in steps:
            if self.uploaded_step < step <= reported:
                self.upload_checkpoint(folder / f"step-{step:07d}", step)
        for step in steps:  # the trainer keeps them all (trainer_process.py): prune here
            if step < self.uploaded_step:
                shutil.rmtree(folder / f"step-{step:07d}", ignore_errors=True)

    def upload_checkpoint(self, source: Path, step: int) -> None:
        try:
            files = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
            files["config.json"] = (self.run_dir / "config.json").read_bytes()
        except FileNotFoundError:  # gone meanwhile (a trainer not started by this worker)
            return
        for name, data in files.items():
            self.jobs.backend.write(f"{self.resume_key}/step-{step}/{name}", data)
        self.jobs.backend.write(
            f"{self.resume_key}/latest.json",
            json.dumps({"step": step, "files": sorted(files)}).encode(),
        )
        if self.uploaded_step:
            self.jobs.backend.delete_tree(f"{self.resume_key}/step-{self.uploaded_step}")
        self.uploaded_step = step
        kept = self.dir / "kept" / f"step-{step}.safetensors"
        kept.parent.mkdir(exist_ok=True)
        kept.write_bytes(files["lora.safetensors"])
        self.kept[step] = kept
        loss = next((m["train_loss"] for m in self.metrics if m["step"] == step), None)
        self.jobs.add_checkpoint(
            CheckpointRecord(
                id=f"ftckpt-{self.job.id.removeprefix('ftjob-')}-{step:08d}",
                fine_tuned_model_checkpoint=names.checkpoint_model(self.fine_tuned_model, step),
                fine_tuning_job_id=self.job.id,
                metrics={"step": step, **({"train_loss": loss} if loss is not None else {})},
                step_number=step,
            )
        )
        self.jobs.add_event(self.job.id, f"Checkpoint created at step {step}")

    def download_checkpoint(self) -> bool:
        """A resumed job continues from the checkpoint an earlier attempt uploaded."""
        if self.job.attempt <= 1:
            return False
        latest = self.jobs.backend.read(f"{self.resume_key}/latest.json")
        if latest is None:
            self.jobs.add_event(self.job.id, "No checkpoint to resume from: starting over")
            return False
        info = json.loads(latest)
        step = info["step"]
        target = self.run_dir / "checkpoints" / f"step-{step:07d}"
        target.mkdir(parents=True)
        for name in info["files"]:
            data = self.jobs.backend.read(f"{self.resume_key}/step-{step}/{name}")
            (self.run_dir / name if name == "config.json" else target / name).write_bytes(data)
        self.uploaded_step = step
        self.jobs.add_event(self.job.id, f"Resuming from the checkpoint at step {step}")
        return True

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> JobRecord:
        me = self.settings.worker_id

        def to_publishing(job: JobRecord) -> JobRecord | None:
            if not queue.owns(job, me):
                return None
            job.publishing = True
            return job

        job = self.jobs.update_job(self.job.id, to_publishing)
        if not (queue.owns(job, me) and job.publishing):
            return job  # cancelled or taken back while the trainer finished: publish nothing
        record = json.loads((self.run_dir / "record.json").read_text())
        training = {
            **record, "job_id": job.id, "fine_tuned_model": self.fine_tuned_model,
            "files": {fid: {"sha256": sha} for fid, sha in job.file_sha256.items()},
        }  # fmt: skip
        kept = sorted(s for s in self.kept if s != record["steps"])
        kept = {s: self.kept[s] for s in kept[-self.settings.keep_checkpoint_models :]}
        try:
            adapter, versions = publish_run(
                self.adapters, job, self.run_dir, kept, self.settings.base_model,
                self.settings.max_rank, training,
            )  # fmt: skip
        except AdapterError as exc:
            return queue.fail(
                self.jobs, job.id, JobError(code="publish_failed", message=str(exc)),
                expect_worker=me,
            )  # fmt: skip
        results = results_csv(_all_steps(record, self.metrics))
        result = results_file(job, results)
        self.jobs.add_file(result, results)
        for step, ref in versions.items():
            self.jobs.add_event(job.id, f"Checkpoint at step {step} is servable as {ref}")

        def to_succeeded(current: JobRecord) -> JobRecord | None:
            current.status, current.lease, current.publishing = "succeeded", None, False
            current.fine_tuned_model = self.fine_tuned_model
            current.adapter, current.checkpoint_versions = adapter, versions
            current.trained_tokens = int(record["trained_tokens"])
            current.finished_at = int(time.time())
            current.result_files = [result.id]
            return current

        job = self.jobs.update_job(job.id, to_succeeded)
        self.jobs.add_event(job.id, f"New fine-tuned model created: {self.fine_tuned_model}")
        self.jobs.add_event(job.id, "The job has successfully completed")
        return job


def _all_steps(record: dict, seen: list[dict]) -> list[dict]:
    """Every step's metrics: as this attempt saw them, or (steps an earlier, lost
    attempt ran) the loss from the training record, which a resume carries over."""
    by_step = {m["step"]: m for m in seen}
    blank = {"learning_rate": "", "tokens": ""}
    return [
        by_step.get(i) or {"step": i, "train_loss": loss, **blank}
        for i, loss in enumerate(record.get("losses", []), start=1)
    ]
