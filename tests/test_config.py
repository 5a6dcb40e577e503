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
    ("[DEFAULT]\nno_such_option = 1\n", "[DEFAULT] no_such_option in {f}:2 is not a provnet option "
     "(`provnet config show` lists every option)"),
    ("[DEFAULT]\n# a comment\nbind_prot = 1\n", "[DEFAULT] bind_prot in {f}:3 is not a provnet option; did you "
     "mean bind_port?"),
    ("[DEFAULT]\nstate_path = /srv\nbind_port = ninety\n", "[DEFAULT] bind_port in {f}:3 must be an integer "
     "1..65535, got 'ninety'"),
    ("[DEFAULT]\nbridge_mappings = physnet1:br\n", "did you mean [ovs] bridge_mappings?"),
    ("[dhcpp]\ninterface = eth0\n", "[dhcpp] interface in {f}:2 is not a provnet option; did you mean [dhcp] "
     "interface?"),
    ("[DEFAULT]\nnova_metadata_port = 70000\n", "[DEFAULT] nova_metadata_port in {f}:2 must be an integer "
     "1..65535, got '70000'"),
    ("[DEFAULT]\nnova_metadata_insecure = maybe\n", "must be a boolean (true or false), got 'maybe'"),
    ("[ovs]\nbridge_mappings = physnet1\n", "[ovs] bridge_mappings in {f}:2 must be physical_network:bridge pairs"),
    ("[DEFAULT]\nagent_down_time = -1\n", "must be a number greater than 0, got '-1'"),
    ("[DEFAULT]\nagent_down_time = nan\n", "must be a number greater than 0, got 'nan'"),
    ("[api]\nmetadata_cache_expiration = -1\n", "must be a number 0 or more"),
    ("[dhcp]\nlease_time = 60\n", "[dhcp] lease_time in {f}:2 must be an integer 120..4294967294 (seconds)"),
    ("not an ini file\n", "{f}:1: an option before any [section] header: start the file with [DEFAULT]"),
    ("[DEFAULT]\ndebug = 1\ndebug = 0\n", "{f}:3: [DEFAULT] debug is given twice in this section; keep one"),
    ("[DEFAULT]\n[api]\n[api]\n", "{f}:3: section [api] appears twice"),
])
def test_bad_file_gives_clear_error(tmp_path, text, needle):
    f = tmp_path / "bad.conf"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(files=[f], env={})
    assert needle.format(f=f) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_environment_and_command_line_values_say_where():
    with pytest.raises(ConfigError, match=r"\[DEFAULT\] debug from \$PROVNET_DEBUG must be a boolean"):
        load_config(files=[], env={"PROVNET_DEBUG": "maybe"})
    with pytest.raises(ConfigError, match=r"\[DEFAULT\] bind_port \(command line\) must be an integer 1..65535, "
                                          "got 0"):
        load_config(files=[], env={}, overrides={"bind_port": 0})


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
    assert "| [DEFAULT] state_path" in out and "| command line |" in out
    bad = subprocess.run([sys.executable, "-m", "provnet.cli", "--config-file", str(tmp_path / "x.conf"),
                          "config", "show"], capture_output=True, text=True)
    assert bad.returncode == 1 and "cannot read config file" in bad.stderr and "Traceback" not in bad.stderr
    assert "Usage:" not in bad.stderr


def test_the_readmes_configuration_reference_is_every_option() -> None:
    """The README's table is OPTIONS rendered (provnet.config.reference_table): a new option cannot go unsaid."""
    from pathlib import Path

    from provnet.config import reference_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("| option | default | env | what it does |")
    assert readme[start:readme.index("\n\n", start)] == reference_table(), \
        "regenerate: python -c 'from provnet.config import reference_table; print(reference_table())'"
