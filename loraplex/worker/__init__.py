"""loraplex.worker: the process that runs fine-tuning jobs (`loraplex worker`).

The contract:

- It claims queued jobs from the store (loraplex.jobs) one at a time, by
  compare-and-swap, and runs each with the trainer as a child process
  (`loraplex train`, torchrun across this machine's GPUs with
  `--nproc-per-node`): a cancel stops the child's whole process group within
  a heartbeat, and a worker that dies takes its child along and leaves a
  lease that expires.
- While a job trains it renews the lease, turns the trainer's
  `metrics.jsonl` into `metrics` events and each checkpoint into a
  checkpoint object (and an upload to the store, so another worker can
  resume it). A job whose lease expired resumes from that checkpoint.
- On success it publishes the adapter (named after the job; its kept
  checkpoints as versions aliased `ckpt-step-N`) with the job id and the
  files' sha256 in the training record, then marks the job succeeded.
  Nothing is published for a cancelled or failed job.
- A thread of its own validates uploaded files with the trainer's record
  checks and admits jobs, so validation never waits behind training.
- It imports jobs, adapters and the trainer's data checks; never serve or
  vllm. torch loads only in the trainer's child process.

Modules: settings.py, validate.py, trainer_process.py (the child),
run.py (one job), publish.py, worker.py (the loops), cli.py.
"""
