"""Settings: defaults, the NVTX mode (auto by default; old 1/0 values still accepted), clear errors
naming the variable, and the README table generated from the one settings table."""
import pytest

from vllm_w2ext import config


def test_defaults():
    s = config.load({})
    assert (s.enabled, s.nvtx, s.export_process, s.step_links, s.otlp) == (False, "auto", "on", "boundary", "auto")


@pytest.mark.parametrize("raw,mode", [("1", "on"), ("0", "off"), ("auto", "auto"), ("ON", "on"), ("off", "off")])
def test_nvtx_modes(raw, mode):
    assert config.load({"VLLM_W2EXT_NVTX": raw}).nvtx == mode


def test_bad_value_names_the_variable():
    with pytest.raises(config.SettingsError, match="VLLM_W2EXT_NVTX='maybe'"):
        config.load({"VLLM_W2EXT_NVTX": "maybe"})
    with pytest.raises(config.SettingsError, match="unknown setting.*VLLM_W2EXT_TYPO"):
        config.load({"VLLM_W2EXT_TYPO": "1"})


def test_markdown_table_lists_every_setting():
    table = config.markdown_table()
    for s in config.SETTINGS:
        assert f"`{config.env_name(s.key)}`" in table
