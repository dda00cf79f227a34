"""net/config.py and engine.runtime.RuntimeConfig: defaults are valid; bad bounds fail at construction."""

import dataclasses
from pathlib import Path

import pytest

from engine.runtime import RuntimeConfig
from net.config import ServerConfig


def test_defaults_are_valid_and_frozen() -> None:
    config = ServerConfig()
    assert (config.host, config.port, config.request_size_max) == ("127.0.0.1", 3002, 64 * 1024)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [{"port": 70000}, {"port": -1}, {"host": ""}, {"request_size_max": 1024}, {"request_size_max": 1 << 30}],
)
def test_bad_server_bounds_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerConfig(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"shard_count": 0},
        {"shard_queue_depth_max": 10, "shard_batch_size_max": 20},
        {"wal_queue_records_max": 100, "wal_batch_records_max": 200},
        {"wal_queue_records_max": 4096, "wal_batch_records_max": 4096, "shard_count": 64},
    ],
)
def test_bad_runtime_relations_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RuntimeConfig(data_dir=Path("x"), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "tally-1.internal", "example.com."])
def test_hosts_accepted(host: str) -> None:
    assert ServerConfig(host=host).host == host


@pytest.mark.parametrize("host", ["", "bad..host", "-x.example", "x-.example", "two words", "a" * 64, "h\nx", "ho_st", "."])
def test_bad_hosts_refused_with_one_line(host: str) -> None:
    with pytest.raises(ValueError, match=r"^host must be an IP address or a host name, not ") as raised:
        ServerConfig(host=host)
    assert len(str(raised.value).splitlines()) == 1
