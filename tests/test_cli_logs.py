# Logs an operator can use: one start line per service (what, where), no library chatter at INFO, text or JSON lines
# with the request id, a log file; `provnet serve` run for real.
from __future__ import annotations

import json
import logging
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from cli_run import PROVNET, free_port, run_process

from provnet.cli.logs import JsonFormatter, setup_logging

REQUEST_ID = "req-0f6f3c2e-9a55-4c53-8d1d-2b1f5a6f7e01"


def serve(tmp_path: Path, *global_args: str, conf_extra: str = "") -> tuple[str, str]:
    """`provnet serve` until /healthz answers, one request with a request id, then SIGTERM: (stderr, API URL)."""
    api, metadata = free_port(), free_port()
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nbind_port = {api}\nmetadata_listen_port = {metadata}\n"
                    f"metadata_proxy_shared_secret = s3cret\n{conf_extra}")
    state = tempfile.mkdtemp(prefix="pn-")  # short: the agent's socket lives there
    err = tmp_path / "serve.err"
    with err.open("w") as sink:
        proc = subprocess.Popen([PROVNET, "--config-file", str(conf), "--state-path", state, *global_args, "serve"],
                                stdout=subprocess.DEVNULL, stderr=sink)
        url = f"http://127.0.0.1:{api}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, err.read_text()
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{metadata}/healthz", timeout=1).read()
                    urllib.request.urlopen(url + "/healthz", timeout=1).read()
                    break
                except OSError:
                    assert time.monotonic() < deadline, err.read_text()
                    time.sleep(0.1)
            request = urllib.request.Request(url + "/v2.0/networks", headers={"X-Openstack-Request-Id": REQUEST_ID})
            urllib.request.urlopen(request, timeout=5).read()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, err.read_text()
    return err.read_text(), state


def test_serve_starts_with_one_line_per_service_and_no_library_chatter(tmp_path: Path):
    text, state = serve(tmp_path)
    # INFO lines until shutdown, requests aside (a WARNING, e.g. about the host's inotify limit, may come too)
    start = [line for line in text.splitlines() if " provnet.api.access " not in line and " INFO " in line]
    start = start[:next(i for i, line in enumerate(start) if line.endswith(" shutting down"))]
    loggers = [line.split()[4] for line in start]  # date time pid LEVEL logger message
    messages = [line.split(None, 5)[5] for line in start]
    assert sorted(loggers) == ["provnet.api", "provnet.metadata.agent", "provnet.metadata.api",
                               "provnet.runtime"], text
    assert any(f"registry: sqlite:///{state}/provnet.sqlite" in m for m in messages)
    assert any(m.startswith("networking API listening on http://127.0.0.1:") for m in messages)
    assert any(f"metadata agent on {state}/metadata_proxy, forwarding to http://127.0.0.1:" in m for m in messages)
    assert any("metadata API on 127.0.0.1:" in m for m in messages)
    assert "alembic" not in text and " started" not in text and "Traceback" not in text
    # the API's access line carries the caller's request id
    assert '"GET /v2.0/networks" 200' in text and REQUEST_ID in text
    # text lines: date, time with milliseconds, pid, level, logger
    first = start[0].split()
    assert len(first[0]) == 10 and len(first[1]) == 12 and first[2].isdigit() and first[3] == "INFO"


def test_json_log_lines_to_a_file_with_the_request_id(tmp_path: Path):
    log_file = tmp_path / "provnet.log"
    text, _ = serve(tmp_path, "--log-format", "json", "--log-file", str(log_file))
    assert text == ""  # everything went to the file
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {"time", "level", "logger", "process", "message"} <= set(records[0])
    assert records[0]["time"].endswith("Z")
    access = [r for r in records if r["logger"] == "provnet.api.access" and "/v2.0/networks" in r["message"]]
    assert access and access[0]["request_id"] == REQUEST_ID and "GET /v2.0/networks" in access[0]["message"]
    assert len({r["process"] for r in records}) == 3  # serve, its metadata API and agent children: one file
    assert not any(r["logger"].startswith("alembic") for r in records)


def test_the_config_options_do_the_same(tmp_path: Path):
    log_file = tmp_path / "conf.log"
    text, _ = serve(tmp_path, conf_extra=f"use_json = true\nlog_file = {log_file}\n")
    assert text == ""
    assert all(json.loads(line)["level"] for line in log_file.read_text().splitlines())


def test_an_unusable_log_file_is_one_clear_error(tmp_path: Path):
    ran = run_process("--log-file", str(tmp_path / "no" / "such" / "dir.log"), "config", "show")
    assert ran.code == 1 and "Usage:" not in ran.stderr and "Traceback" not in ran.stderr
    assert ran.stderr == f"Error: cannot open the log file {tmp_path}/no/such/dir.log: No such file or directory\n"
    bad = run_process("--log-format", "xml", "config", "show")
    assert bad.code == 2 and "Invalid value for '--log-format'" in bad.stderr


def test_json_formatter_finds_the_request_id_and_keeps_exceptions():
    record = logging.LogRecord("provnet.metadata.agent", logging.WARNING, __file__, 1,
                               "%s GET %s from %s -> %d", (REQUEST_ID, "/latest", "172.16.1.103", 404), None)
    out = json.loads(JsonFormatter().format(record))
    assert out["request_id"] == REQUEST_ID and out["message"].endswith("-> 404") and out["level"] == "WARNING"
    plain = json.loads(JsonFormatter().format(logging.LogRecord("x", logging.INFO, __file__, 1, "no id", (), None)))
    assert "request_id" not in plain
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(rec))["exception"]


def test_setup_twice_in_one_process_keeps_one_handler(capsys: pytest.CaptureFixture):
    root = logging.getLogger()
    setup_logging(False)
    setup_logging(False, "json")
    ours = [h for h in root.handlers if getattr(h, "_provnet", False)]
    assert len(ours) == 1
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("provnet.test").info("hello %s", REQUEST_ID)
    err = capsys.readouterr().err
    assert "SQLiteImpl" not in err and json.loads(err.strip().splitlines()[-1])["request_id"] == REQUEST_ID
    root.removeHandler(ours[0])
