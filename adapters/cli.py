"""`loraplex adapters ...`: publish, inspect and manage the store from a shell.

A thin layer: each command parses, calls one `Store` method, prints. Errors
print one line on stderr and exit 1; `--json` prints machine-readable output.
"""

import json
from pathlib import Path

import typer

from loraplex.adapters.errors import AdapterError
from loraplex.adapters.evaluations import Evaluation, list_evaluations
from loraplex.adapters.manifest import Manifest
from loraplex.adapters.refs import AdapterRef
from loraplex.adapters.store import Store, open_store

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)

STORE = typer.Option(None, "--store", help="Store URL [env LORAPLEX_STORE].")
JSON = typer.Option(False, "--json", help="Print JSON.")


def _run(store_url: str | None, action):
    try:
        return action(open_store(store_url))
    except (AdapterError, OSError) as exc:  # OSError: an output dir that is a file, ...
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _print(data, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@app.command()
def push(
    src_dir: Path = typer.Argument(..., help="A PEFT LoRA adapter directory."),
    name: str = typer.Option(..., "--name", help="Adapter name."),
    alias: list[str] = typer.Option(
        [], "--alias", metavar="NAME", help="Alias to move to the new version."
    ),
    base_model: Path = typer.Option(None, "--base-model", help="Check against this base."),
    description: str = typer.Option(None, "--description"),
    max_rank: int = typer.Option(16, "--max-rank", help="The server's --max-lora-rank."),
    store: str = STORE,
    as_json: bool = JSON,
) -> None:
    """Validate and publish DIR as the next version of NAME."""

    def action(s: Store):
        return s.publish(
            src_dir,
            name,
            aliases=alias,
            base_model=base_model,
            description=description,
            max_rank=max_rank,
        )

    manifest = _run(store, action)
    _print(manifest.model_dump(mode="json"), as_json, f"published {manifest.ref}")


@app.command("list")
def list_adapters(
    store: str = STORE,
    as_json: bool = JSON,
    limit: int = typer.Option(100, "--limit", min=1, help="Names per page."),
    after: str = typer.Option(None, "--after", help="Start after this name (next page)."),
) -> None:
    """List adapters with their versions and aliases, a page at a time."""

    def action(s: Store):
        page, more = s.catalog_page(after or "", limit)
        return [{"name": n, "versions": v, "aliases": a} for n, (v, a) in page.items()], more

    rows, more = _run(store, action)
    lines = [
        f"{r['name']:<24} versions {','.join(map(str, r['versions']))}  "
        + " ".join(f"{a}→{v}" for a, v in sorted(r["aliases"].items()))
        for r in rows
    ]
    _print(rows, as_json, "\n".join(lines) or "(no adapters)")
    if more:
        typer.echo(f"more: --after {rows[-1]['name']}", err=True)


@app.command()
def show(ref: str = typer.Argument(...), store: str = STORE, as_json: bool = JSON) -> None:
    """Show the manifest of REF (name, name@N or name:alias) and its evaluations."""
    manifest, aliases, evaluations = _run(
        store,
        lambda s: (s.resolve(ref), s.aliases(AdapterRef.parse(ref).name), list_evaluations(s, ref)),
    )
    data = manifest.model_dump(mode="json")
    data["evaluations"] = [e.model_dump(mode="json") for e in evaluations]
    text = "\n".join([_describe(manifest, aliases), *map(_describe_evaluation, evaluations)])
    _print(data, as_json, text)


def _describe(m: Manifest, aliases: dict[str, int]) -> str:
    pointing = sorted(a for a, v in aliases.items() if v == m.version)
    fingerprint = m.base.fingerprint[:16] if m.base.fingerprint else "none (not checked)"
    lines = [
        f"{m.ref}" + (f"  ({', '.join(pointing)})" if pointing else ""),
        f"  created      {m.created_at.isoformat(timespec='seconds')}",
        f"  base model   {m.base.id}  fingerprint {fingerprint}",
        f"  lora         r={m.lora.r} alpha={m.lora.lora_alpha:g} rslora={m.lora.use_rslora} "
        f"targets={','.join(m.lora.target_modules)}",
    ]
    lines += [
        f"  file         {f}  {e.size:,} bytes  sha256 {e.sha256[:16]}"
        for f, e in sorted(m.files.items())
    ]
    if m.description:
        lines.append(f"  description  {m.description}")
    if m.training:
        lines.append(f"  training     {json.dumps(m.training, sort_keys=True)}")
    return "\n".join(lines)


def _describe_evaluation(e: Evaluation) -> str:
    figures = "  ".join(
        f"{name} {_figure(f.value)} [{_figure(f.low)}, {_figure(f.high)}]"
        for name, f in e.metrics.items()
    )
    line = (
        f"  evaluation   {e.created_at.isoformat(timespec='seconds')}  data sha256 "
        f"{e.data_sha256[:12]} (n={e.examples})  {figures}  on {e.base_model or '?'} "
        f"({e.quantization or '?'}) at {e.endpoint}"
    )
    if e.decision:
        d = e.decision
        verdict = "moved" if d.moved else "not moved"
        line += f"\n               {d.alias}: {verdict} ({d.reason})"
    return line


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@app.command()
def alias(
    name: str = typer.Argument(...),
    alias: str = typer.Argument(...),
    version: int = typer.Argument(...),
    store: str = STORE,
    as_json: bool = JSON,
) -> None:
    """Point NAME:ALIAS at VERSION."""
    _run(store, lambda s: s.set_alias(name, alias, version))
    _print(
        {"name": name, "alias": alias, "version": version}, as_json, f"{name}:{alias} → {version}"
    )


@app.command()
def rm(
    ref: str = typer.Argument(...),
    force: bool = typer.Option(False, "--force", help="Delete even if an alias points at it."),
    store: str = STORE,
    as_json: bool = JSON,
) -> None:
    """Delete a version."""
    manifest = _run(store, lambda s: s.delete(ref, force=force))
    _print({"deleted": manifest.ref}, as_json, f"deleted {manifest.ref}")


@app.command()
def pull(
    ref: str = typer.Argument(...),
    out_dir: Path = typer.Argument(...),
    store: str = STORE,
    as_json: bool = JSON,
) -> None:
    """Write a verified copy of REF's adapter files to DIR."""
    manifest = _run(store, lambda s: s.pull(ref, out_dir))
    _print({"pulled": manifest.ref, "dir": str(out_dir)}, as_json, f"{manifest.ref} → {out_dir}")


@app.command()
def verify(
    ref: str = typer.Argument(...),
    base_model: Path = typer.Option(None, "--base-model", help="Also check against this base."),
    store: str = STORE,
    as_json: bool = JSON,
) -> None:
    """Check every hash of REF and that it can be served."""
    manifest = _run(store, lambda s: s.verify(ref, base_model=base_model))
    _print({"verified": manifest.ref}, as_json, f"{manifest.ref}: ok")
