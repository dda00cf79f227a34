"""The PostgreSQL harness itself (tests/cluster/pg.py): it starts as a non-root user on loopback,
has the durability settings the cluster tests rely on, keeps committed rows across a SIGKILL and a
restart, and hands each test its own database."""

from __future__ import annotations

from tests.cluster.pg import PostgresServer


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def test_settings_and_owner(postgres: PostgresServer) -> None:
    rows = postgres.psql("SELECT name || '=' || setting FROM pg_settings WHERE name IN "
                         "('fsync','synchronous_commit','listen_addresses','full_page_writes','port') ORDER BY name")
    assert rows.stdout.split() == ["fsync=on", "full_page_writes=on", "listen_addresses=127.0.0.1",
                                   f"port={postgres.port}", "synchronous_commit=on"]
    assert postgres.psql("SELECT current_user").stdout.strip() == "postgres"
    assert postgres.psql("SELECT inet_server_addr()").stdout.strip() == "127.0.0.1"


def test_fresh_database_per_call(postgres: PostgresServer, pg_db: str) -> None:
    other = postgres.create_database()
    assert other != pg_db and other.startswith(f"postgresql://postgres@127.0.0.1:{postgres.port}/")
    postgres.psql("CREATE TABLE t (a int)", database=_db(pg_db))
    listed = postgres.psql("SELECT count(*) FROM pg_tables WHERE tablename = 't'", database=_db(other))
    assert listed.stdout.strip() == "0"


def test_committed_rows_survive_sigkill_and_restart(postgres: PostgresServer, pg_db: str) -> None:
    db = _db(pg_db)
    postgres.psql("CREATE TABLE t (a int PRIMARY KEY)", database=db)
    postgres.psql("INSERT INTO t SELECT generate_series(1, 500)", database=db)
    old_pid = postgres.pid
    postgres.kill()
    assert not postgres.running
    postgres.start()
    assert postgres.pid != old_pid
    assert postgres.psql("SELECT count(*), sum(a) FROM t", database=db).stdout.strip() == "500|125250"
    postgres.psql("INSERT INTO t VALUES (501)", database=db)
    postgres.restart()
    assert postgres.psql("SELECT max(a) FROM t", database=db).stdout.strip() == "501"
