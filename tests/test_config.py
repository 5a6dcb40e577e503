# Configuration: precedence (default < file < env < command line), conversions, clear errors, `config show`.
from __future__ import annotations

import subprocess
import sys

import pytest

from provnet.config import ConfigError, load_config, render


def test_defaults_and_state_path_interpolation():
    cfg = load_config(files=[], env={})
    assert cfg.state_path == "/var/lib/provnet"
    assert cfg.db_url == "sqlite:////var/lib/provnet/provnet.sqlite"
    assert cfg.metadata_proxy_socket == "/var/lib/provnet/metadata_proxy"
    assert cfg.source("state_path") == "default"


def test_precedence_file_env_cli(tmp_path):
    f = tmp_path / "provnet.conf"
    f.write_text("[DEFAULT]\nstate_path = /srv/a\nnova_metadata_port = 9000\n"
                 "[ovs]\nbridge_mappings = physnet1:br-phy\n")
    cfg = load_config(files=[f], env={})
    assert cfg.state_path == "/srv/a" and cfg.source("state_path") == str(f)
    assert cfg.nova_metadata_port == 9000
    assert cfg.get("ovs.bridge_mappings") == {"physnet1": "br-phy"}
    cfg = load_config(files=[f], env={"PROVNET_STATE_PATH": "/srv/b"})
    assert cfg.state_path == "/srv/b" and cfg.source("state_path") == "env PROVNET_STATE_PATH"
    cfg = load_config(files=[f], env={"PROVNET_STATE_PATH": "/srv/b"}, overrides={"state_path": "/srv/c"})
    assert cfg.state_path == "/srv/c" and cfg.source("state_path") == "command line"
    assert cfg.db_url == "sqlite:////srv/c/provnet.sqlite"


@pytest.mark.parametrize("text, needle", [
    ("[DEFAULT]\nno_such_option = 1\n", "unknown option [DEFAULT] no_such_option"),
    ("[DEFAULT]\nnova_metadata_port = 70000\n", "nova_metadata_port = '70000'"),
    ("[DEFAULT]\nnova_metadata_insecure = maybe\n", "expected a boolean"),
    ("[ovs]\nbridge_mappings = physnet1\n", "expected key:value pairs"),
    ("[DEFAULT]\nagent_down_time = -1\n", "must be greater than 0"),
    ("[DEFAULT]\nagent_down_time = nan\n", "must be greater than 0"),
    ("[api]\nmetadata_cache_expiration = -1\n", "must be 0 or more"),
    ("not an ini file\n", "config file"),
])
def test_bad_file_gives_clear_error(tmp_path, text, needle):
    f = tmp_path / "bad.conf"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(files=[f], env={})
    assert needle in str(exc.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(files=[tmp_path / "nope.conf"], env={})


def test_render_masks_secrets():
    cfg = load_config(files=[], env={}, overrides={"metadata_proxy_shared_secret": "s3cret",
                                                   "database.connection": "postgresql://u:pw@h/db"})
    text = render(cfg)
    assert "s3cret" not in text and "pw@" not in text
    assert "[DEFAULT] metadata_proxy_shared_secret" in text and "***" in text


def test_config_show_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "provnet.cli", "--state-path", str(tmp_path), "config", "show"],
                         capture_output=True, text=True, check=True).stdout
    assert "[DEFAULT] state_path" in out and "(command line)" in out
    bad = subprocess.run([sys.executable, "-m", "provnet.cli", "--config-file", str(tmp_path / "x.conf"),
                          "config", "show"], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot read config file" in bad.stderr and "Traceback" not in bad.stderr
