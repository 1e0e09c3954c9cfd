"""Every `loraplex … --help` reads well in an 80-column terminal."""

import re
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from loraplex.cli import app

ROOT = typer.main.get_command(app)


def commands(group: click.Command = ROOT, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(group, "list_commands"):  # typer groups are not click.Group
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            found += commands(group.get_command(ctx, name), (*path, name))
    return found


def command_at(path: tuple[str, ...]) -> click.Command:
    command = ROOT
    for name in path:
        command = command.get_command(click.Context(command), name)
    return command


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "loraplex")
def test_help_fits_80_columns_and_names_every_option_in_full(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    text = result.output
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text
    assert not re.search(r"<list\[|<\w+\[", text), text  # typer's `<list[Path]>` metavars
    assert not re.search(r"\s\.(\s|$)", text), text  # "Store URL ." from eaten [markup]
    for param in command_at(path).params:
        for name in param.opts + param.secondary_opts:
            if name.startswith("-"):
                assert re.search(rf"(^|[\s,/]){re.escape(name)}([\s,=/]|$)", text, re.M), name


def test_every_command_is_covered():
    names = {" ".join(p) for p in commands()}
    assert {"train", "serve", "adapters push", "new-key"} <= names


REPO = Path(__file__).resolve().parents[1]
DOCUMENTED = re.compile(r"`loraplex ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?")


def documented_commands() -> set[tuple[str, ...]]:
    """Every `loraplex CMD [SUB]` quoted in the code's docstrings, the README and docs/."""
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    for package in ("adapters", "serve", "trainer", "loraplex", "k8s"):
        files += (REPO / package).rglob("*.py")
    found = set()
    for path in files:
        for first, second in DOCUMENTED.findall(path.read_text()):
            found.add((first, second) if second else (first,))
    return found


def test_every_command_the_docs_name_exists():
    known = {" ".join(p) for p in commands()}
    groups = {p[0] for p in commands() if len(p) > 1}
    # `loraplex serve --x` names "serve"; `loraplex adapters show` names "adapters show".
    named = {" ".join(w[:2] if w[0] in groups else w[:1]) for w in documented_commands()}
    assert not named - known, f"documented but not a command: {sorted(named - known)}"
