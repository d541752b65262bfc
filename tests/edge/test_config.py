from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.edge_agent.config import AgentConfig, load_config, write_config
from edgefleet.edge_agent.errors import ConfigError


def test_file_then_environment_overrides(tmp_path: Path) -> None:
    cfg = AgentConfig.model_validate({"agent": {"device_id": "cam-1", "data_dir": str(tmp_path)}, "mqtt": {"port": 1884}})
    path = tmp_path / "agent.toml"
    write_config(cfg, path)
    loaded = load_config(path, env={"EDGEFLEET_AGENT_MQTT_HOST": "broker.local", "EDGEFLEET_AGENT_SOURCE_FPS": "5"})
    assert loaded.mqtt.port == 1884 and loaded.mqtt.host == "broker.local" and loaded.source.fps == 5.0
    assert loaded.agent.device_id == "cam-1"


def test_invalid_config_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\ndevice_id = "x"\n[source]\nfps = -1\n')
    with pytest.raises(ConfigError, match="source.fps"):
        load_config(path, env={})
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path, env={})
