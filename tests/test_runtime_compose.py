# The runtime's composition helpers: the configuration a parent hands its children, and its private file.
from __future__ import annotations

import os
import stat

from provnet.config import load_config
from provnet.runtime import compose


def test_the_effective_configuration_round_trips_through_the_childs_file(tmp_path) -> None:
    base = tmp_path / "base.conf"
    base.write_text("[DEFAULT]\nmetadata_proxy_shared_secret = s3cret\n[ovs]\nbridge_mappings = p1:br1,p2:br2\n"
                    "[api]\nmetadata_trusted_networks = 10.0.0.0/8, 192.168.0.0/16\n")
    config = load_config(files=[base], overrides={"state_path": str(tmp_path / "state"), "bind_port": 9999,
                                                  "debug": True}, env={})
    with compose.child_config(compose.serve_config(config), "serve") as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds the secret
        child = load_config(files=[path], env={})
        for opt, setting in config.items():
            if opt.key.startswith("nova_metadata_"):
                continue  # serve's agent forwards to serve's own metadata API
            assert child.get(opt.key) == setting.value, opt.key
        assert (child.nova_metadata_host, child.nova_metadata_port) == ("127.0.0.1", config.metadata_listen_port)
    assert not os.path.exists(path)  # removed when the parent stops


def test_a_killed_parents_file_is_removed_and_a_live_ones_kept(tmp_path) -> None:
    config = load_config(files=[], overrides={"state_path": str(tmp_path)}, env={})
    run = tmp_path / "run"
    run.mkdir(parents=True)
    dead = run / "serve-4194303.conf"  # above the kernel's default pid_max: no such process
    alive = run / f"serve-{os.getppid()}.conf"
    dead.write_text("")
    alive.write_text("")
    with compose.child_config(config, "serve"):
        assert not dead.exists() and alive.exists()
