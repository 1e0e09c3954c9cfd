"""loraplex.evaluate: scoring models and adapters through an OpenAI-compatible endpoint.

The contract:

- It talks to a server only through the official `openai` client (and one
  plain GET of a loraplex gateway's `/metrics` for the base and
  quantization), never to vLLM's internals: what it measures is what a
  client of that endpoint gets, on the engine and quantized base that serve.
- It reads held-out data with the trainer's formats and validation and
  renders it with the trainer's renderer (tokenizer only), so the loss
  scores exactly the tokens training trains: the assistant answers and their
  end-of-turn token. On a float32 base that loss equals the trainer's eval
  loss (a train↔serve fidelity check as well as a quality figure).
- It may import adapters, trainer.data / trainer.render, openai, sacrebleu,
  rouge-score, numpy and matplotlib; never vllm, serve, or the trainer's
  torch code.
- Results are typed (results.py); the table, JSON report, plot and the
  records kept in the store (adapters/evaluations.py) are made from them.

The modules, one job each: data.py (file → examples), endpoint.py (probe,
client, errors), requests.py (loss from prompt logprobs, greedy answers),
scores.py (the metrics), judge.py (pairwise verdicts), bootstrap.py (95%
intervals), run.py (the recipe), report.py (table, JSON, plot), record.py
(stored evaluations), promote.py (gated alias moves), cli.py.
"""
