"""loraplex.estimate: will it fit, and how long will it take — before anything loads.

The contract:

- **Input** is what the user would run: a `TrainConfig` (the same YAML and
  flags as `loraplex train`) or the serving flags of `loraplex serve`, a base
  model directory, and a device (a GPU name, a memory size, or this CPU).
- **Only `config.json` is read.** The model is built by transformers on the
  meta device (no weights, no compute); its modules give the shapes, and one
  decoder layer is run on meta tensors to count, exactly, the bytes autograd
  keeps for backward. Any architecture transformers builds that way works;
  one it does not know is an `EstimateError`, never a guess.
- **Output** is typed: `TrainEstimate` / `ServeEstimate` (dataclasses) whose
  `items` are the breakdown (`MemoryItem`: what, bytes, how it was counted).
  The CLI's table and its `--json` are both made from them.
- **Measured, not assumed, where the machine is at hand**: on the CPU the
  time comes from timing one decoder layer's forward and backward at the
  run's shapes; on a named GPU it comes from a FLOPs model and the GPU's
  dense bf16 peak at an assumed MFU, and says so.

Borders: imports transformers (config, meta device) and torch, and the
trainer's light modules that define what a run is (config, plan, packing,
dataset, loss constants); never vLLM or `serve/`. The trainer reaches this
package only from its command line (the CUDA pre-flight), and `serve/` only
to log its estimate at start.
"""

from loraplex.estimate.errors import EstimateError

__all__ = ["EstimateError"]
