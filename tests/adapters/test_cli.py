"""`loraplex adapters ...`: each command on both backends, and errors as one line."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from loraplex.adapters import open_store
from loraplex.adapters.cli import app
from tests.adapters.conftest import edit_config

runner = CliRunner()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def ok_json(*args: str):
    return json.loads(ok(*args, "--json"))


def fails(*args: str) -> str:
    """The command exits 1 with exactly one line on stderr, and no traceback."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_the_whole_workflow(store_url, adapter_dir, tiny_model_dir, tmp_path):
    s = ("--store", store_url)
    assert ok("push", str(adapter_dir), "--name", "chat", *s) == "published chat@1\n"
    pushed = ok_json(
        "push", str(adapter_dir), "--name", "chat", "--alias", "canary",
        "--base-model", str(tiny_model_dir), "--description", "second", *s,
    )  # fmt: skip
    assert (pushed["name"], pushed["version"], pushed["description"]) == ("chat", 2, "second")
    assert pushed["base"]["fingerprint"]

    assert ok_json("list", *s) == [
        {"name": "chat", "versions": [1, 2], "aliases": {"canary": 2, "latest": 2}}
    ]
    assert ok("list", *s).split() == ["chat", "versions", "1,2", "canary→2", "latest→2"]

    shown = ok_json("show", "chat:canary", *s)
    assert (shown["version"], shown["lora"]["r"], shown["description"]) == (2, 8, "second")
    text = ok("show", "chat:canary", *s).splitlines()
    assert text[0] == "chat@2  (canary, latest)"
    assert text[2].split()[:3] == ["base", "model", tiny_model_dir.name]
    assert "r=8 alpha=16 rslora=False targets=k_proj,o_proj,q_proj,v_proj" in text[3]
    assert [line.split()[1] for line in text if line.startswith("  file")] == [
        "adapter_config.json", "adapter_model.safetensors",
    ]  # fmt: skip
    assert text[-1] == "  description  second"
    assert "fingerprint none (not checked)" in ok("show", "chat@1", *s)

    assert ok_json("alias", "chat", "prod", "1", *s) == {
        "name": "chat", "alias": "prod", "version": 1,
    }  # fmt: skip
    assert ok("alias", "chat", "prod", "2", *s) == "chat:prod → 2\n"
    assert ok("alias", "chat", "prod", "1", *s) == "chat:prod → 1\n"

    assert ok_json("pull", "chat:prod", str(tmp_path / "out"), *s)["pulled"] == "chat@1"
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == (
        adapter_dir / "adapter_model.safetensors"
    ).read_bytes()

    assert ok("verify", "chat", "--base-model", str(tiny_model_dir), *s) == "chat@2: ok\n"
    assert ok_json("verify", "chat@1", *s) == {"verified": "chat@1"}

    assert "is the target of alias(es) prod" in fails("rm", "chat@1", *s)
    assert ok_json("rm", "chat:prod", "--force", *s) == {"deleted": "chat@1"}
    assert ok_json("list", *s)[0]["versions"] == [2]
    assert ok("rm", "chat", "--force", *s) == "deleted chat@2\n"
    assert ok_json("list", *s) == []


def test_empty_store_lists_nothing(tmp_path):
    assert ok("list", "--store", str(tmp_path / "store")) == "(no adapters)\n"
    assert ok_json("list", "--store", str(tmp_path / "store")) == []


def test_the_store_comes_from_the_environment(monkeypatch, adapter_dir, tmp_path):
    monkeypatch.setenv("LORAPLEX_STORE", str(tmp_path / "env-store"))
    ok("push", str(adapter_dir), "--name", "chat")
    assert (tmp_path / "env-store" / "chat" / "v1" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "nope"), "error: adapter 'nope' does not exist in file://"),
        (("show", "Bad/Name"), "error: invalid adapter name 'Bad/Name': it has upper-case"),
        (("show", "chat@x"), "the version after '@' must be a positive number"),
        (("alias", "chat", "prod", "7"), "error: adapter 'chat@7' does not exist"),
        (("rm", "chat@9"), "error: adapter 'chat@9' does not exist"),
        (("verify", "nope"), "error: adapter 'nope' does not exist"),
        (("pull", "nope", "/tmp/loraplex-never"), "error: adapter 'nope' does not exist"),
    ],
)
def test_errors_print_one_line_and_exit_1(tmp_path, args, message):
    assert message in fails(*args, "--store", str(tmp_path / "store"))


def test_push_of_a_bad_adapter_says_what_is_wrong(copy_adapter, tmp_path):
    bad = edit_config(copy_adapter(), r=24)
    line = fails("push", str(bad), "--name", "chat", "--store", str(tmp_path / "store"))
    assert "rank 24 is not a vLLM rank slot; use 16 or 32" in line


def test_push_respects_the_servers_max_rank(copy_adapter, tmp_path):
    line = fails(
        "push", str(copy_adapter()), "--name", "chat", "--max-rank", "1",
        "--store", str(tmp_path / "store"),
    )  # fmt: skip
    assert "rank 8 is above the server's maximum rank 1" in line


def test_pull_into_a_file_is_one_line(adapter_dir, tmp_path):
    ok("push", str(adapter_dir), "--name", "chat", "--store", str(tmp_path / "store"))
    (tmp_path / "taken").write_text("")
    line = fails("pull", "chat", str(tmp_path / "taken"), "--store", str(tmp_path / "store"))
    assert "File exists" in line


def test_an_unreachable_store_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    assert "cannot create adapter store" in fails("list", "--store", str(tmp_path / "file" / "s"))


def test_the_installed_command_prints_one_line_and_loads_no_torch(tmp_path):
    # A real process through the composition root: `loraplex adapters` must stay
    # light (DESIGN.md: it never loads torch or vLLM).
    code = (
        "import sys\n"
        "from loraplex.cli import app\n"
        "try:\n"
        "    app(['adapters', 'show', 'nope', '--store', sys.argv[1]])\n"
        "except SystemExit as e:\n"
        "    heavy = sorted({'torch', 'vllm', 'transformers'} & set(sys.modules))\n"
        "    print('heavy:', heavy, 'exit:', e.code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store")], capture_output=True, text=True
    )
    assert result.stdout.strip() == "heavy: [] exit: 1"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: adapter 'nope'")


def test_verify_and_pull_of_a_tampered_version_name_the_file(adapter_dir, tmp_path):
    store = str(tmp_path / "store")
    ok("push", str(adapter_dir), "--name", "chat", "--store", store)
    stored = tmp_path / "store" / "chat" / "v1" / "adapter_model.safetensors"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    for args in (("verify", "chat"), ("pull", "chat", str(tmp_path / "out"))):
        line = fails(*args, "--store", store)
        assert "chat@1: adapter_model.safetensors does not match its manifest" in line


def test_push_of_a_folder_that_is_no_adapter(tmp_path):
    (tmp_path / "empty").mkdir()
    line = fails("push", str(tmp_path / "empty"), "--name", "chat", "--store", str(tmp_path / "s"))
    assert line.endswith("is not a PEFT adapter: adapter_config.json is missing")


def test_list_pages_through_many_names(tmp_path):
    store = open_store(str(tmp_path / "store"))
    for i in range(25):  # the layout of a committed version, without publishing 25 adapters
        store.backend.write(f"n{i:02d}/v1/manifest.json", b"{}")
        store.backend.write(f"n{i:02d}/aliases.json", b'{"latest": 1}')
    s = ["--store", store.url]
    first = runner.invoke(app, ["list", "--json", "--limit", "10", *s])
    assert [r["name"] for r in json.loads(first.stdout)] == [f"n{i:02d}" for i in range(10)]
    assert "more: --after n09" in first.stderr
    rest = ok_json("list", "--limit", "20", "--after", "n09", *s)
    assert [r["name"] for r in rest] == [f"n{i:02d}" for i in range(10, 25)]
    assert rest[0] == {"name": "n10", "versions": [1], "aliases": {"latest": 1}}


def test_list_pages_visit_each_adapter_once(store):
    names = ["a", "a-b", "a.c", "a_d", "b"]
    for name in names:
        store.backend.write(f"{name}/v1/manifest.json", b"{}")
    store.backend.write("empty/v1/.claim", b"")  # a claimed version, never committed
    seen, after = [], []
    while True:
        args = ["list", "--json", "--limit", "2", "--store", store.url, *after]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        page = [r["name"] for r in json.loads(result.stdout)]
        assert 1 <= len(page) <= 2
        seen += page
        if "more: --after" not in result.stderr:
            break
        after = ["--after", result.stderr.split("--after ")[1].strip()]
        assert after[1] == page[-1]
    assert sorted(seen) == names and len(seen) == len(names)
