"""CONTRACT §11 through a real `tally serve`: alert rules, signed deliveries to a receiver on
127.0.0.1, redelivery with the same event id after 500s, a receiver down across a SIGKILL of Tally.

Method: a threaded HTTP receiver records every request and verifies its signature with the
secret the admin API showed once; it answers 500 for its first N requests on demand, and can be
shut (connection refused) and reopened on the same port. Waits are polls bounded by a deadline;
no assertion is about timing. How it could fail: a missing, extra, reordered or re-numbered
event; a bad signature; an event lost or invented across the SIGKILL; a digest that changes when
nothing happened.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from engine.core.signing import verify
from tests.api.harness import ADMIN_KEY, Server, replay, request
from tests.system.server import free_port
from tests.waiting import wait_for

WAIT_S = 40


class Receiver:
    """Records (event_id, status answered, body json, signature ok) for every POST."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.secret = ""
        self.fail_next = 0
        self.seen: list[tuple[str, int, dict[str, Any], bool]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def open(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(receiver.secret, self.headers.get("Tally-Signature", ""), body, int(time.time()))
                with receiver.lock:
                    status = 500 if receiver.fail_next > 0 else 200
                    receiver.fail_next -= status == 500
                    receiver.seen.append((self.headers.get("Tally-Event-Id", ""), status, json.loads(body), ok))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies answered 2xx, in arrival order, first delivery of each id."""
        with self.lock:
            first: dict[str, dict[str, Any]] = {}
            for event_id, status, body, _ in self.seen:
                if status == 200 and event_id not in first:
                    first[event_id] = body
            return list(first.values())


def admin(port: int, method: str, target: str, body: Any = None) -> Any:
    reply = request(port, method, target, key=ADMIN_KEY, body=body)
    assert reply.status == 200, (target, reply.status, reply.body)
    return reply.json()


def write(port: int, target: str, body: Any) -> Any:
    reply = request(port, "POST" if not target.startswith("/v1/alerts") else "PUT", target, body=body)
    assert reply.status == 200, (target, reply.status, reply.body)
    return reply.json()


def balance_events(bodies: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(b["type"], b["data"]["threshold"], b["data"]["available"]) for b in bodies]


def test_alerts_signed_delivery_redelivery_and_sigkill(tmp_path: Path) -> None:
    receiver = Receiver(free_port())
    receiver.open()
    server = Server(tmp_path / "data").start()
    try:
        port = server.port
        created = admin(port, "POST", "/admin/v1/webhooks",
                        {"project": "default", "url": f"http://127.0.0.1:{receiver.port}/hook"})  # fmt: skip
        receiver.secret = created["secret"]
        wid = created["webhook_id"]
        assert created["events"] == ["balance.below_threshold", "balance.recovered", "freeze.auto_settled", "credits.expired"]
        assert "secret" not in admin(port, "GET", "/admin/v1/webhooks")["items"][0]
        write(port, "/v1/customers/deposit", {"customer_id": "c1", "amount": 1000})
        rules = write(port, "/v1/alerts/c1", {"thresholds": [100, 500]})
        assert [(r["wallet"], r["thresholds"], r["below"]) for r in rules["rules"]] == [(None, [500, 100], [])]
        receiver.fail_next = 2  # the first event is refused twice, then accepted
        write(port, "/v1/billing/deduct", {"customer_id": "c1", "amount": 600, "transaction_id": "t1"})
        write(port, "/v1/billing/deduct", {"customer_id": "c1", "amount": 350, "transaction_id": "t2"})
        write(port, "/v1/customers/deposit", {"customer_id": "c1", "amount": 1000})
        wait_for(lambda: len(receiver.delivered()) == 4, what="four events delivered", within_s=WAIT_S)
        bodies = receiver.delivered()
        assert balance_events(bodies) == [
            ("balance.below_threshold", 500, 400), ("balance.below_threshold", 100, 50),
            ("balance.recovered", 100, 1050), ("balance.recovered", 500, 1050),
        ]  # fmt: skip
        first_id = bodies[0]["id"]
        assert [s for e, s, _, _ in receiver.seen if e == first_id] == [500, 500, 200]  # same id, redelivered
        assert all(ok for _, _, _, ok in receiver.seen), "every attempt carries a valid signature"
        assert {b["project"] for b in bodies} == {"default"} and all(b["data"]["customer_id"] == "c1" for b in bodies)
        page = admin(port, "GET", f"/admin/v1/webhooks/{wid}/deliveries?limit=100")
        outcomes = [(i["event_id"], i["outcome"], i["status"]) for i in reversed(page["items"])]
        assert outcomes[:3] == [(first_id, "retry", 500), (first_id, "retry", 500), (first_id, "delivered", 200)]

        # The receiver goes down; two events wait; Tally is SIGKILLed; both come after restart.
        receiver.close()
        write(port, "/v1/billing/deduct", {"customer_id": "c1", "amount": 1000, "transaction_id": "t3"})
        wait_for(lambda: any(i["status"] == 0 for i in admin(port, "GET", f"/admin/v1/webhooks/{wid}/deliveries")["items"]),
                 what="a refused attempt logged", within_s=WAIT_S)  # fmt: skip
        pending_id = admin(port, "GET", f"/admin/v1/webhooks/{wid}/deliveries")["items"][0]["event_id"]
        server.kill()
        receiver.open()
        server.start()
        wait_for(lambda: len(receiver.delivered()) == 6, what="the two waiting events delivered after restart", within_s=WAIT_S)
        later = receiver.delivered()[4:]
        assert balance_events(later) == [("balance.below_threshold", 500, 50), ("balance.below_threshold", 100, 50)]
        lsn = pending_id.split("_")[1]
        assert [b["id"] for b in later] == [f"evt_{lsn}_0", f"evt_{lsn}_1"]
        # The receiver sees a POST before the server has logged (and fsync'd) its outcome.
        wait_for(lambda: admin(port, "GET", "/admin/v1/webhooks")["items"][0]["pending"] == 0, what="the outcome logged",
                 within_s=WAIT_S)  # fmt: skip
        time.sleep(0.3)  # a short settle so a wrongly invented event would have arrived (not a timing assert)
        assert len(receiver.delivered()) == 6 and all(ok for _, _, _, ok in receiver.seen)
    finally:
        server.kill()
        if receiver.server is not None:
            receiver.close()
    digest = replay(server.data_dir)["digest"]
    server.start()
    assert server.stop() == 0
    assert replay(server.data_dir)["digest"] == digest, "a restart with nothing to do changes nothing"


def test_alert_and_webhook_requests_are_validated(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        port = server.port
        cases = [
            ("POST", "/admin/v1/webhooks", {"project": "default", "url": "ftp://x/"}, ADMIN_KEY, 400, "invalid_url"),
            ("POST", "/admin/v1/webhooks", {"project": "default", "url": "http://u:p@x/"}, ADMIN_KEY, 400, "invalid_url"),
            ("POST", "/admin/v1/webhooks", {"project": "default", "url": "http://x/", "events": ["nope"]}, ADMIN_KEY, 400, "invalid_events"),
            ("POST", "/admin/v1/webhooks", {"project": "default", "url": "http://x/", "events": []}, ADMIN_KEY, 400, "invalid_events"),
            ("POST", "/admin/v1/webhooks", {"project": "nope", "url": "http://x/"}, ADMIN_KEY, 404, "project_not_found"),
            ("POST", "/admin/v1/webhooks", {"project": "default", "url": "http://x/"}, None, 403, "admin_required"),
            ("POST", "/admin/v1/webhooks/wh_1/delete", None, ADMIN_KEY, 404, "webhook_not_found"),
            ("GET", "/admin/v1/webhooks/wh_1/deliveries", None, ADMIN_KEY, 404, "webhook_not_found"),
            ("PUT", "/v1/alerts/c1", {"thresholds": [1]}, None, 404, "customer_not_found"),
            ("PUT", "/v1/alerts/c1", {"thresholds": [1, 1]}, None, 400, "invalid_thresholds"),
            ("PUT", "/v1/alerts/c1", {"thresholds": [0]}, None, 400, "invalid_thresholds"),
            ("PUT", "/v1/alerts/c1", {"thresholds": list(range(1, 30))}, None, 400, "invalid_thresholds"),
            ("GET", "/v1/alerts/c1", None, None, 404, "customer_not_found"),
        ]
        for method, target, body, key, status, code in cases:
            kwargs: dict[str, Any] = {"body": body} if body is not None else {}
            reply = request(port, method, target, **kwargs) if key is None else request(port, method, target, key=key, **kwargs)
            assert (reply.status, reply.code) == (status, code), (method, target, body, reply.body)
        created = admin(port, "POST", "/admin/v1/webhooks", {"project": "default", "url": "http://127.0.0.1:9/"})
        deleted = admin(port, "POST", f"/admin/v1/webhooks/{created['webhook_id']}/delete")
        assert deleted["webhook_id"] == created["webhook_id"] and deleted["discarded"] == 0
        assert admin(port, "GET", "/admin/v1/webhooks") == {"items": []}
    finally:
        server.kill()
