"""CONTRACT §9.4-§9.7 through real `tally serve` processes on loopback.

What: /metrics counters move with traffic (exact values, parsed with prometheus_client's parser);
one request log line per request, found by its X-Request-Id, and no key, body or email anywhere
in the log; /health 503 `recovering` with progress on a data dir that takes seconds to recover,
other routes 503 not_ready meanwhile; TALLY_* variables (a flag wins); 0600 files in a 0700 dir;
`tally backup` under write load -> `tally verify` 0 and every deposit acknowledged before the
backup began present in a server started on the copy.
How it could fail: a raw path as a label, a missing or merged log line, a secret in the log, a
closed port during recovery, a world-readable file, a backup missing an acknowledged write.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.ops.helpers import call, start_serve, write_big_log
from tests.system.server import TallyProcess, free_port, tally_cli

KEY = "vb_live_ops_test_key_0123456789abcdef"
EMAIL = "alice.secret@example.com"


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = call(url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain"), (status, headers)
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _deposit(url: str, customer: str, key_suffix: str, **extra: object) -> tuple[int, dict[str, str], bytes]:
    body = {"customer_id": customer, "amount": 100, "idempotency_key": f"dep-{key_suffix}", **extra}
    return call(url + "/v1/customers/deposit", body=body, key=KEY)


def test_metrics_count_requests_by_route_template(tmp_path: Path) -> None:
    server = TallyProcess(tmp_path / "data", api_key=KEY).start()
    try:
        url = server.base_url
        assert _deposit(url, "cust/with@odd", "1")[0] == 200
        for i in range(7):
            status, _, _ = call(url + "/v1/billing/deduct", key=KEY,
                                body={"customer_id": "cust/with@odd", "amount": 1, "transaction_id": f"t{i}"})
            assert status == 200
        for _ in range(3):
            assert call(url + "/v1/billing/deduct", body={"customer_id": "x", "amount": 1, "transaction_id": "u"})[0] == 401
        for _ in range(2):
            assert call(url + "/v1/customers/cust%2Fwith@odd", key=KEY)[0] == 200
        assert call(url + "/v1/customers/cust%2Fwith@odd/ledger", key=KEY)[0] == 200
        samples = _samples(url)
    finally:
        assert server.stop() == 0

    def requests(route: str, method: str, status: int) -> float:
        labels = (("method", method), ("route", route), ("status", str(status)))
        return samples.get(("tally_http_requests_total", labels), 0.0)

    assert requests("/v1/billing/deduct", "POST", 200) == 7
    assert requests("/v1/billing/deduct", "POST", 401) == 3
    assert requests("/v1/customers/deposit", "POST", 200) == 1
    assert requests("/v1/customers/{customer_id}", "GET", 200) == 2
    assert requests("/v1/customers/{customer_id}/ledger", "GET", 200) == 1
    # Records: the bootstrap key, the admin key (§9.1), 1 deposit, 7 deducts; every one went
    # through a group commit.
    assert samples[("tally_wal_last_lsn", ())] == 10
    assert samples[("tally_wal_batch_records_sum", ())] == 10
    assert samples[("tally_ready", ())] == 1
    labels = {value for (_, label_set) in samples for _, value in label_set}
    assert not any("odd" in value for value in labels), labels  # a customer id never becomes a label


def test_one_log_line_per_request_and_no_secret_in_the_log(tmp_path: Path) -> None:
    server = TallyProcess(tmp_path / "data", api_key=KEY).start()
    ids: dict[str, tuple[str, str, int, str | None]] = {}
    try:
        url = server.base_url
        status, headers, _ = _deposit(url, "bob", "9", email=EMAIL, name="Bob Secretname",
                                      metadata={"note": "body-secret-value"})
        ids[headers["X-Request-Id"]] = ("POST", "/v1/customers/deposit", 200, None)
        status, headers, _ = call(url + "/v1/billing/deduct", key=KEY,
                                  body={"customer_id": "bob", "amount": 10**9, "transaction_id": "big"})
        ids[headers["X-Request-Id"]] = ("POST", "/v1/billing/deduct", 400, "insufficient_balance")
        status, headers, _ = call(url + "/v1/customers/bob", key="tly_not_a_real_key_xyz")
        ids[headers["X-Request-Id"]] = ("GET", "/v1/customers/{customer_id}", 401, "invalid_api_key")
        status, headers, _ = call(url + f"/v1/customers/{EMAIL}", key=KEY)
        ids[headers["X-Request-Id"]] = ("GET", "/v1/customers/{customer_id}", 404, "customer_not_found")
    finally:
        assert server.stop() == 0  # flushes the buffered request lines
    log = server.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    for request_id, (method, route, status, code) in ids.items():
        found = [line for line in lines if line.get("request_id") == request_id]
        assert len(found) == 1, (request_id, found)
        line = found[0]
        assert (line["method"], line["route"], line["status"], line["code"]) == (method, route, status, code), line
        assert line["level"] == "info"
    for secret in (KEY, "tly_not_a_real_key_xyz", EMAIL, "Bob Secretname", "body-secret-value"):
        assert secret not in log
    assert any("recovered records=" in line.get("msg", "") for line in lines)


def test_health_says_recovering_with_progress_while_other_routes_are_not_ready(tmp_path: Path) -> None:
    data = tmp_path / "data"
    last_lsn = write_big_log(data, KEY, 200_000)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(data, port, tmp_path / "serve.log")
    recovering: list[int] = []
    refused = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, headers, body = call(url + "/health")
            except OSError:
                time.sleep(0.01)  # not listening yet: the interpreter is still importing
                continue
            if status == 200:
                break
            assert status == 503 and "X-Request-Id" in headers
            health = json.loads(body)
            assert set(health) == {"status", "records"} and health["status"] == "recovering", health
            recovering.append(health["records"])
            if refused is None:
                refused = call(url + "/v1/billing/deduct", key=KEY, body={"customer_id": "c-1", "amount": 1, "transaction_id": "x"})
            time.sleep(0.05)
        assert call(url + "/health")[0] == 200
        after = _samples(url)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    assert len(recovering) >= 2, recovering  # seen more than once: it was recovering for a while
    assert recovering == sorted(recovering) and recovering[-1] <= last_lsn
    assert refused is not None
    status, headers, body = refused
    error = json.loads(body)["error"]
    assert (status, error["code"], error["retryable"]) == (503, "not_ready", True)
    assert error["request_id"] == headers["X-Request-Id"]
    assert after[("tally_recovery_records", ())] == last_lsn
    assert after[("tally_wal_last_lsn", ())] == last_lsn + 1  # + the admin key made at first start (§9.1)


def test_environment_configures_serve_and_a_flag_wins(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    env_port, flag_port = free_port(), free_port()
    env = {"TALLY_PORT": str(env_port), "TALLY_DATA_DIR": str(data), "TALLY_LOG_FORMAT": "text",
           "TALLY_BOOTSTRAP_KEY": KEY, "TALLY_SNAPSHOT_INTERVAL_S": "1"}
    log_path = tmp_path / "serve.log"
    # Only --port as a flag: everything else from the environment.
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "net.cli", "serve", "--port", str(flag_port)],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(f"http://127.0.0.1:{flag_port}/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert call(f"http://127.0.0.1:{flag_port}/health")[0] == 200  # --port won over TALLY_PORT
        assert _deposit(f"http://127.0.0.1:{flag_port}", "env-cust", "e")[0] == 200
        deadline = time.monotonic() + 30
        while not list(data.glob("snapshot-*.snap")) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    assert (data / "LOCK").exists()  # TALLY_DATA_DIR was used
    text = log_path.read_text()
    assert " INFO tally.request " in text and '"request_id"' not in text  # TALLY_LOG_FORMAT=text
    # CONTRACT §9.6: 0700 directory, 0600 files (LOCK, segments, snapshot).
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert any(p.name.startswith("snapshot-") for p in files) and any(p.name.startswith("wal-") for p in files)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


def test_version_and_bad_environment(tmp_path: Path) -> None:
    done = tally_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == "tally 0.1.0", done
    cases = [
        ({"TALLY_PORT": "99999"}, "--port must be 0..65535, not 99999 (from TALLY_PORT)"),
        ({"TALLY_PORT": "abc"}, "TALLY_PORT: invalid int value: 'abc'"),
        ({"TALLY_SHARD_COUNT": "0"}, "--shard-count must be 1..256"),
        ({"TALLY_LOG_FORMAT": "xml"}, "TALLY_LOG_FORMAT must be one of json, text, not 'xml'"),
        ({"TALLY_LOG_LEVEL": "loud"}, "TALLY_LOG_LEVEL must be one of"),
        ({"TALLY_PRUNE_SEGMENTS": "maybe"}, "TALLY_PRUNE_SEGMENTS must be one of"),
        ({"TALLY_SNAPSHOT_INTERVAL_S": "nan"}, "TALLY_SNAPSHOT_INTERVAL_S"),
    ]
    data = tmp_path / "never"
    for env, says in cases:
        done = subprocess.run([sys.executable, "-m", "net.cli", "serve", "--data-dir", str(data)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        assert (done.returncode, done.stdout) == (2, ""), (env, done)
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
        assert says in done.stderr, (says, done.stderr)
    done = tally_cli("serve", "--log-format", "xml", "--data-dir", str(data))
    assert done.returncode == 2 and "--log-format" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not data.exists()


def test_backup_under_write_load_holds_every_acknowledged_write(tmp_path: Path) -> None:
    server = TallyProcess(tmp_path / "data", api_key=KEY, extra_args=(
        "--snapshot-interval-records", "300", "--wal-segment-size-max", "8192")).start()
    acknowledged: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer(name: str) -> None:
        i = 0
        while not stop.is_set():
            customer = f"{name}-{i}"
            if _deposit(server.base_url, customer, customer)[0] == 200:
                with lock:
                    acknowledged.append(customer)
            i += 1

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        while len(acknowledged) < 600:
            time.sleep(0.05)
        with lock:
            before = list(acknowledged)
        target = tmp_path / "backup"
        done = tally_cli("backup", "--data-dir", str(server.data_dir), "--to", str(target))
        with lock:
            during = len(acknowledged) - len(before)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        assert server.stop() == 0
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["last_lsn"] >= len(before) + 1
    assert during > 0  # writes went on while the backup ran (the load was real)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in target.iterdir())
    verified = tally_cli("verify", "--data-dir", str(target))
    assert verified.returncode == 0, verified.stderr
    assert tally_cli("backup", "--data-dir", str(server.data_dir), "--to", str(target)).returncode == 2  # not empty
    restored = TallyProcess(target, api_key=KEY).start()
    try:
        missing = [c for c in before if call(f"{restored.base_url}/v1/customers/{c}", key=KEY)[0] != 200]
    finally:
        assert restored.stop() == 0
    assert missing == []
