"""The plugin: found through vLLM's entry points, chooses the ops loraplex's wrapper runs.

It patches nothing of vLLM's: `punica_cpu`'s op names still point at vLLM's own ops.
"""

import os

import pytest
import vllm.lora.ops.torch_ops as vllm_ops
import vllm.lora.punica_wrapper.punica_cpu as punica_cpu
from vllm.plugins import DEFAULT_PLUGINS_GROUP, load_plugins_by_group

from loraplex.serve.cpu_lora_ops import ops as loraplex_ops
from loraplex.serve.cpu_lora_ops import plugin


@pytest.fixture(autouse=True)
def restore_default(monkeypatch):
    yield
    monkeypatch.delenv(plugin.ENV, raising=False)
    plugin.register()


def vllms_module_is_untouched() -> bool:
    return all(getattr(punica_cpu, n) is getattr(vllm_ops, n) for n in loraplex_ops.OPS)


def test_vllm_finds_the_plugin_through_its_entry_point():
    assert load_plugins_by_group(DEFAULT_PLUGINS_GROUP)["loraplex_cpu_lora_ops"] is plugin.register


def test_loraplex_ops_are_the_default(monkeypatch):
    monkeypatch.delenv(plugin.ENV, raising=False)
    plugin.register()
    assert plugin.active_cpu_lora_ops() == "loraplex"
    assert vllms_module_is_untouched()


def test_env_selects_vllm_ops_and_back(monkeypatch):
    monkeypatch.setenv(plugin.ENV, "vllm")
    plugin.register()
    assert plugin.active_cpu_lora_ops() == "vllm"
    monkeypatch.setenv(plugin.ENV, "loraplex")
    plugin.register()
    assert plugin.active_cpu_lora_ops() == "loraplex"
    assert vllms_module_is_untouched()


def test_unknown_choice_is_refused_with_the_options(monkeypatch):
    monkeypatch.setenv(plugin.ENV, "triton")
    with pytest.raises(plugin.CpuLoraOpsChoiceError, match="'loraplex', 'grouped' or 'vllm'"):
        plugin.register()


def test_startup_log_names_the_active_ops_once(monkeypatch, caplog):
    monkeypatch.setenv(plugin.ENV, "vllm")
    plugin.register()
    monkeypatch.setenv(plugin.ENV, "loraplex")
    with caplog.at_level("INFO", logger=plugin.logger.name):
        plugin.register()
        plugin.register()
    lines = [r.getMessage() for r in caplog.records if r.name == plugin.logger.name]
    assert lines == ["CPU LoRA ops: loraplex (LORAPLEX_CPU_LORA_OPS=loraplex)"]


def test_the_serve_setting_reaches_the_engine_environment(monkeypatch):
    """`loraplex serve --cpu-lora-ops vllm` sets the variable the engine processes inherit."""
    from loraplex.serve.app import prepare_environment
    from loraplex.serve.settings import ServeSettings

    # Set first, so that the test restores what prepare_environment overwrites.
    monkeypatch.setenv(plugin.ENV, "loraplex")
    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "1")
    monkeypatch.setenv("LORAPLEX_ADAPTER_MAX_WAIT", "30")
    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    prepare_environment(ServeSettings(cpu_lora_ops="vllm"))
    assert os.environ[plugin.ENV] == "vllm"
    plugin.register()
    assert plugin.active_cpu_lora_ops() == "vllm"
    monkeypatch.setenv(plugin.ENV, "loraplex")
    plugin.register()
