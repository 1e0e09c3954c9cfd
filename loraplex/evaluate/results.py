"""Typed results: what a run measured. The JSON report, the table, the plot and the
store's records are all made from these."""

from datetime import datetime

from pydantic import BaseModel, Field


class Figure(BaseModel):
    """One metric of one model: the value and its 95% bootstrap interval."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0  # examples (or judged pairs) behind the value
    failed: int = 0  # requests that failed (timeouts, HTTP errors, bad responses)
    errors: list[str] = Field(default_factory=list)  # distinct reasons, first few


class JudgeFigure(Figure):
    """Win rate (ties count half) against `against`, from pairs judged in both orders."""

    against: str
    win: int = 0
    tie: int = 0
    loss: int = 0
    invalid: int = 0  # pairs with a verdict not in the asked format
    invalid_samples: list[str] = Field(default_factory=list)


class ModelResult(BaseModel):
    model: str  # as the user named it
    served_as: str  # what the endpoint was asked for (name@N when the store resolved it)
    metrics: dict[str, Figure] = Field(default_factory=dict)
    judge: JudgeFigure | None = None
    answers_per_s: float | None = None
    answers: list[str | None] = Field(default_factory=list)  # greedy, one per example
    answer_tokens: list[int | None] = Field(default_factory=list)  # as the server counted

    def figure(self, metric: str) -> Figure | None:
        return self.judge if metric == "judge" else self.metrics.get(metric)


class DataSummary(BaseModel):
    path: str
    sha256: str
    format: str
    records: int
    examples: int
    problems: list[str]


class EvalReport(BaseModel):
    started_at: datetime
    finished_at: datetime | None = None
    partial: bool = True  # False once every planned request has been answered or failed
    endpoint: str
    server: str
    base_model: str | None
    quantization: str | None
    data: DataSummary
    metrics: list[str]
    concurrency: int
    max_tokens: int
    judge: dict | None = None
    sources: list[str] = Field(default_factory=list)
    models: list[ModelResult] = Field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(f.failed for m in self.models for f in [*m.metrics.values(), m.judge] if f)

    def model(self, name: str) -> ModelResult:
        return next(m for m in self.models if m.model == name)
