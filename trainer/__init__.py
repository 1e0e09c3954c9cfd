"""loraplex.trainer: datasets → LoRA / QLoRA adapters vLLM serves → the adapter store.

The recipe is `train.train(config, base_model)` (train.py, read it top to
bottom); `config.load_config(path, overrides)` builds its `TrainConfig`; the
command line is `loraplex train` (cli.py). The components, one job each:
config.py, data.py (formats, validation), dataset.py (files → examples),
render.py (chat template, label masking), packing.py, plan.py (data order),
loss.py, model.py (4-bit / bf16 / fp32 + LoRA), optim.py, loop.py (one step,
eval), checkpoint.py, rundir.py, monitor.py, record.py, export.py, distributed.py
(torchrun: process group, micro-batches by rank, DDP or FSDP2).

Importing this package is light: torch and transformers load with the
modules that need them.
"""
