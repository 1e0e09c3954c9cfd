"""The vLLM flags the manifests pass through `loraplex serve` are vLLM's: the
whole argv the gateway would hand vLLM, built from each manifest's settings
and arguments, parses with vLLM's own server parser. (vLLM is imported in a
child process: about 8 s, no engine.)"""

import json
import subprocess
import sys

import pytest

from loraplex.serve.engine_args import vllm_argv
from tests.deploy.cli_contract import VLLM_PASSTHROUGH, options, serve_settings
from tests.deploy.cli_contract import command as loraplex_command
from tests.deploy.manifests import REPO, container_env, loraplex_containers, split_args

PARSE = """
import json, sys
from loraplex.serve.engine_args import parse_vllm_args
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

parser = make_arg_parser(FlexibleArgumentParser(prog="vllm"))
flags = sorted({s for a in parser._actions for s in a.option_strings})
parsed = []
for argv in json.loads(sys.stdin.read()):
    args = parse_vllm_args(argv)
    parsed.append({"max_model_len": args.max_model_len, "port": args.port})
print(json.dumps({"flags": flags, "parsed": parsed}))
"""


@pytest.mark.slow
def test_gateway_argv_parses_with_vllms_parser(stacks):
    argvs, passed = [], set()
    for stack in stacks.values():
        for _, _, container in loraplex_containers(stack.objects, "serve"):
            args = container.get("args", [])
            own = options(loraplex_command("serve"))
            passthrough = [a for a in args if split_args([a])[0][0] not in own]
            passed |= {split_args([a])[0][0] for a in passthrough}
            settings = serve_settings(container_env(container, stack), args)
            argvs.append(vllm_argv(settings, passthrough))
    result = subprocess.run(
        [sys.executable, "-c", PARSE],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert passed == VLLM_PASSTHROUGH, "keep the allow-list to what the manifests pass"
    assert set(answer["flags"]) >= VLLM_PASSTHROUGH
    assert [p["port"] for p in answer["parsed"]] == [8000] * len(argvs)
    assert all(p["max_model_len"] for p in answer["parsed"])
