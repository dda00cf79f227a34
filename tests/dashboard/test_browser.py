"""The dashboard (issue 13) in a real headless browser against a real `tally serve`.

What: the page, its assets and icon are served (also while recovering is covered in tests/net);
an admin signs in, picks the project, searches customers by prefix, opens one and sees the four
balance figures the API gives; pages the ledger newest first with the API's entry ids; creates a
key with a label (the key shown once works against the API) and revokes it (the API then answers
401 api_key_revoked); a project key signs in without the admin parts; API text is rendered as
text; the customer page lists the open freezes as GET .../freezes does, each TTL's action, due
time and time left counting down, a freeze gone after an unfreeze, and pages them with next;
the browser logs no console error at any point.
How: Debian's chromium + chromium-driver (system paths; a browser cannot be downloaded here)
through selenium, headless, loopback only; customers and ledger entries seeded through the API
with raw HTTP (tests/api/harness.py); every wait is a bounded WebDriverWait on the DOM, never a
sleep or a timing assertion. The server is killed by its own PID and the driver quit.
How it could fail: a hook missing or renamed, figures that differ from the API, paging that skips
or repeats, a key shown twice or not at all, a 4xx/404 the page causes (console error), a
customer id injected as markup.
Set TALLY_DASHBOARD_SCREENSHOT=<file.png> to save the customer page (README's docs/dashboard.png).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.api.harness import ADMIN_KEY, API_KEY, Server, request

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("Debian chromium + chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)  # fmt: skip

from selenium import webdriver  # noqa: E402  (after the skip: selenium is only needed with a browser)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT_S = 60  # a hang detector, not a speed claim: CI machines can be slow under -n 2
PROJECT = "default"  # the bootstrap key's project (net/bootstrap.py)
BUSY = "acme-0007"  # the customer with many ledger entries
BUSY_DEDUCTS = 119  # + 1 grant + 1 freeze + 1 grant in a second wallet = 122 entries: 3 pages of 50
ODD_ID = 'acme-<b id="x">odd</b> & "quoted"/é'  # markup in an id must stay text


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


def api(port: int, method: str, target: str, body: Any = None, key: str = API_KEY) -> Any:
    reply = request(port, method, target, key=key, body=body)
    assert reply.status == 200, (method, target, reply.status, reply.body)
    return reply.json()


def seed(port: int) -> None:
    for i in range(1, 31):
        api(port, "POST", "/v1/customers/deposit", {"customer_id": f"acme-{i:04d}", "amount": 1000 + i})
    for i in range(1, 6):
        api(port, "POST", "/v1/customers/deposit", {"customer_id": f"beta-{i}", "amount": 50})
    api(port, "POST", "/v1/customers/deposit", {"customer_id": ODD_ID, "amount": 7, "metadata": {"note": "<script>x</script>"}})
    api(port, "POST", "/v1/customers/deposit",
        {"customer_id": BUSY, "amount": 300, "wallet": "promo", "source": "campaign", "expires_at": "2099-01-01T00:00:00Z"})  # fmt: skip
    for i in range(BUSY_DEDUCTS):
        api(port, "POST", "/v1/billing/deduct", {"customer_id": BUSY, "amount": 3, "transaction_id": f"d-{i}"})
    api(port, "POST", "/v1/billing/freeze",
        {"customer_id": BUSY, "amount": 40, "transaction_id": "f-1", "unfreeze_after_seconds": 3600})  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(tmp_path_factory.mktemp("dashboard") / "data")
    process.start()
    try:
        seed(process.port)
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="tally-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1360,1000", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page(server: Server, driver: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """A fresh page (sessionStorage cleared); after the test, no console error was logged."""
    # Cleared on a page of the same origin that runs no app.js (and has no CSP for the browser's
    # viewer to trip on): on /dashboard itself, the sign-in the last test's key starts could
    # store the key again after the clear (seen once under load).
    driver.get(server.base_url + "/health")
    driver.execute_script("sessionStorage.clear()")
    driver.get(server.base_url + "/dashboard")
    wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, tid("api-key-input"))))
    yield driver
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]  # type: ignore[no-untyped-call]
    assert errors == [], errors


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT_S)


def find(driver: WebDriver, testid: str) -> WebElement:
    return wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, tid(testid))))


def sign_in(driver: WebDriver, key: str) -> None:
    box = find(driver, "api-key-input")
    box.send_keys(key)
    find(driver, "sign-in").click()
    find(driver, "nav-customers")


# Rows are read in one script call: the page replaces them as pages load, so element handles
# held across two calls could go stale.
def customer_ids(driver: WebDriver) -> list[str]:
    script = "return [...document.querySelectorAll(arguments[0])].map(r => r.dataset.customerId)"
    return list(driver.execute_script(script, tid("customer-row")))


def ledger_rows(driver: WebDriver) -> list[tuple[str, str]]:
    script = "return [...document.querySelectorAll(arguments[0])].map(r => [r.dataset.entryId, r.dataset.operationType])"
    return [(entry_id, kind) for entry_id, kind in driver.execute_script(script, tid("ledger-row"))]


def test_assets_and_icon_are_served(server: Server) -> None:
    for path, kind in (("/dashboard", "text/html"), ("/dashboard/app.js", "text/javascript"),
                       ("/dashboard/app.css", "text/css"), ("/favicon.ico", "image/x-icon")):  # fmt: skip
        reply = request(server.port, "GET", path, key=None)
        assert reply.status == 200 and reply.headers["content-type"].startswith(kind), (path, reply.status)
        assert reply.body
        assert "'self'" in reply.headers["content-security-policy"]
    html = request(server.port, "GET", "/dashboard", key=None).body.decode()
    for hook in ("api-key-input", "sign-in", "project-select", "customer-search", "balance-total", "balance-used",
                 "balance-frozen", "balance-available", "ledger-next", "key-label", "key-create", "key-secret",
                 "nav-customers", "nav-keys", "freezes-next", "freezes-refresh"):  # fmt: skip
        assert f'data-testid="{hook}"' in html, hook
    assert request(server.port, "GET", "/favicon.ico", key=None).body[:4] == b"\x00\x00\x01\x00"  # an ICO


def test_session_probe(server: Server) -> None:
    assert api(server.port, "GET", "/dashboard/session", key=ADMIN_KEY) == {"admin": True, "project": None}
    assert api(server.port, "GET", "/dashboard/session") == {"admin": False, "project": PROJECT}
    assert request(server.port, "GET", "/dashboard/session", key=None).code == "missing_api_key"
    assert request(server.port, "GET", "/dashboard/session", key="nope").code == "invalid_api_key"


def test_admin_searches_opens_a_customer_and_pages_the_ledger(server: Server, page: WebDriver) -> None:
    sign_in(page, ADMIN_KEY)
    select = Select(find(page, "project-select"))
    assert PROJECT in [option.get_attribute("value") for option in select.options]
    select.select_by_value(PROJECT)
    wait(page).until(lambda d: len(customer_ids(d)) > 0)
    search = find(page, "customer-search")
    search.send_keys("acme-000")
    wanted = [f"acme-{i:04d}" for i in range(1, 10)]
    wait(page).until(lambda d: customer_ids(d) == wanted)
    page.find_element(By.CSS_SELECTOR, f'{tid("customer-row")}[data-customer-id="{BUSY}"]').click()
    customer = api(server.port, "GET", f"/v1/customers/{BUSY}")
    for figure in ("total", "used", "frozen", "available"):
        wait(page).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, tid(f"balance-{figure}")), str(customer["balance"][figure])))
        assert find(page, f"balance-{figure}").text == str(customer["balance"][figure])
    assert customer["balance"]["frozen"] == 40
    # the ledger, newest first, page by page, against the API's own pages of the same size
    per_page = int(Select(page.find_element(By.ID, "f-limit")).first_selected_option.text)
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        target = f"/v1/customers/{BUSY}/ledger?limit={per_page}" + (f"&cursor={cursor}" if cursor else "")
        expected = api(server.port, "GET", target)
        want = [(entry["id"], entry["operation_type"]) for entry in expected["items"]]
        wait(page).until(lambda d: ledger_rows(d) == want)
        seen += want
        cursor = expected["next_cursor"]
        nxt = find(page, "ledger-next")
        if not expected["has_more"]:
            assert not nxt.is_enabled()
            break
        wait(page).until(ec.element_to_be_clickable((By.CSS_SELECTOR, tid("ledger-next")))).click()
    assert len(seen) == len(set(seen)) == BUSY_DEDUCTS + 3
    assert seen[0][1] == "FREEZE" and seen[-1][1] == "GRANT"
    shot = os.environ.get("TALLY_DASHBOARD_SCREENSHOT")
    if shot:
        page.find_element(By.ID, "ledger-first").click()
        wait(page).until(lambda d: ledger_rows(d) and ledger_rows(d)[0] == seen[0])
        page.set_window_size(1360, 1900)
        page.execute_script("window.scrollTo(0, 0)")
        page.save_screenshot(shot)
        page.set_window_size(1360, 1000)


def test_ledger_filter_by_operation_type(server: Server, page: WebDriver) -> None:
    sign_in(page, ADMIN_KEY)
    find(page, "customer-search").send_keys(BUSY)
    wait(page).until(lambda d: customer_ids(d) == [BUSY])
    page.find_element(By.CSS_SELECTOR, tid("customer-row")).click()
    wait(page).until(lambda d: len(ledger_rows(d)) > 0)
    Select(page.find_element(By.ID, "f-operation-type")).select_by_value("GRANT")
    page.find_element(By.CSS_SELECTOR, "#ledger-filters button[type=submit]").click()
    grants = api(server.port, "GET", f"/v1/customers/{BUSY}/ledger?operation_type=GRANT&limit=100")["items"]
    wait(page).until(lambda d: ledger_rows(d) == [(entry["id"], "GRANT") for entry in grants])


def test_admin_creates_uses_and_revokes_a_key(server: Server, page: WebDriver) -> None:
    sign_in(page, ADMIN_KEY)
    find(page, "nav-keys").click()
    find(page, "key-label").send_keys("browser test key")
    find(page, "key-create").click()
    secret = wait(page).until(lambda d: d.find_element(By.CSS_SELECTOR, tid("key-secret")).text.strip())
    assert isinstance(secret, str)
    listed = api(server.port, "GET", f"/admin/v1/keys?project={PROJECT}", key=ADMIN_KEY)["items"]
    (mine,) = [k for k in listed if k["label"] == "browser test key"]
    row = f'{tid("key-row")}[data-key-id="{mine["key_id"]}"]'
    wait(page).until(ec.visibility_of_element_located((By.CSS_SELECTOR, row)))
    assert secret not in page.find_element(By.CSS_SELECTOR, row).text  # shown once, never in the list
    assert api(server.port, "GET", "/v1/customers?limit=1", key=secret)["total_count"] >= 1
    page.find_element(By.CSS_SELECTOR, f"{row} {tid('key-revoke')}").click()
    wait(page).until(lambda d: not d.find_elements(By.CSS_SELECTOR, f"{row} {tid('key-revoke')}"))
    assert request(server.port, "GET", "/v1/customers?limit=1", key=secret).code == "api_key_revoked"


def test_project_key_signs_in_without_admin_parts(server: Server, page: WebDriver) -> None:
    sign_in(page, API_KEY)
    wait(page).until(lambda d: len(customer_ids(d)) > 0)
    assert not page.find_element(By.CSS_SELECTOR, tid("nav-keys")).is_displayed()
    assert not page.find_element(By.CSS_SELECTOR, tid("project-select")).is_displayed()
    first = api(server.port, "GET", "/v1/customers?limit=25")
    assert customer_ids(page) == [item["customer_id"] for item in first["items"]]
    assert "sessionStorage" not in page.current_url and API_KEY not in page.current_url


def test_api_text_is_rendered_as_text(server: Server, page: WebDriver) -> None:
    sign_in(page, API_KEY)
    find(page, "customer-search").send_keys("acme-<")
    wait(page).until(lambda d: customer_ids(d) == [ODD_ID])
    assert page.find_elements(By.ID, "x") == []  # the id's <b id="x"> did not become an element
    page.find_element(By.CSS_SELECTOR, tid("customer-row")).click()
    wait(page).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, tid("balance-total")), "7"))
    assert page.find_element(By.ID, "customer-title").text == ODD_ID
    assert "<script>x</script>" in page.find_element(By.ID, "customer-metadata").text
    assert page.find_elements(By.ID, "x") == []
    customer = api(server.port, "GET", "/v1/customers/" + quote(ODD_ID, safe=""))
    assert find(page, "balance-available").text == str(customer["balance"]["available"])


FREEZER = "frz-browser"  # the customer whose open freezes the Freezes section shows
MANY_FREEZES = 22  # one page of 20 (the page's FREEZE_PAGE) and a second of 2


def freeze_rows(driver: WebDriver) -> list[str]:
    script = "return [...document.querySelectorAll(arguments[0])].map(r => r.dataset.transactionId)"
    return list(driver.execute_script(script, tid("freeze-row")))


def ttl_cell(driver: WebDriver, transaction_id: str) -> tuple[str, str | None, str]:
    """(time-left text, data-settle-at, TTL action text) of one freeze row, in one script call."""
    script = """const row = document.querySelector(arguments[0]);
        if (!row) return null;
        const cell = row.querySelector(arguments[1]);
        return [cell.textContent, cell.getAttribute('data-settle-at'), row.children[4].textContent];"""
    found = driver.execute_script(script, f'{tid("freeze-row")}[data-transaction-id="{transaction_id}"]', tid("freeze-ttl"))
    assert found is not None, transaction_id
    return (found[0], found[1], found[2])


def seconds_left(text: str) -> int:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(part[:-1]) * units[part[-1]] for part in text.split())


def open_customer(driver: WebDriver, customer_id: str) -> None:
    find(driver, "customer-search").send_keys(customer_id)
    wait(driver).until(lambda d: customer_ids(d) == [customer_id])
    driver.find_element(By.CSS_SELECTOR, tid("customer-row")).click()


def test_live_freezes_with_their_ttls(server: Server, page: WebDriver) -> None:
    port = server.port
    api(port, "POST", "/v1/customers/deposit", {"customer_id": FREEZER, "amount": 500})
    api(port, "POST", "/v1/billing/freeze", {"customer_id": FREEZER, "amount": 60, "transaction_id": "fb-ttl",
                                             "unfreeze_after_seconds": 3600})  # fmt: skip
    api(port, "POST", "/v1/billing/freeze", {"customer_id": FREEZER, "amount": 25, "transaction_id": "fb-auto",
                                             "consume_after_seconds": 600})  # fmt: skip
    api(port, "POST", "/v1/billing/freeze", {"customer_id": FREEZER, "amount": 10, "transaction_id": "fb-plain"})
    listed = api(port, "GET", f"/v1/customers/{FREEZER}/freezes")["items"]
    assert [item["transaction_id"] for item in listed] == ["fb-plain", "fb-auto", "fb-ttl"]
    sign_in(page, API_KEY)
    open_customer(page, FREEZER)
    wait(page).until(lambda d: freeze_rows(d) == ["fb-plain", "fb-auto", "fb-ttl"])
    wait(page).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, tid("balance-frozen")), "95"))
    by_id = {item["transaction_id"]: item for item in listed}
    # the TTL: its action, its due time as the API gives it, and the time left counting down
    wait(page).until(lambda d: ttl_cell(d, "fb-ttl")[0] not in ("", "due"))
    left, settle_at, action = ttl_cell(page, "fb-ttl")
    assert (settle_at, action) == (by_id["fb-ttl"]["settle_at"], "unfreeze")
    assert 0 < seconds_left(left) <= 3600, left
    wait(page).until(lambda d: ttl_cell(d, "fb-ttl")[0] != left)  # it counts down (a bounded wait)
    assert seconds_left(ttl_cell(page, "fb-ttl")[0]) < seconds_left(left)
    auto_left, auto_at, auto_action = ttl_cell(page, "fb-auto")
    assert (auto_at, auto_action) == (by_id["fb-auto"]["settle_at"], "consume")
    assert 0 < seconds_left(auto_left) <= 600, auto_left
    assert ttl_cell(page, "fb-plain") == ("no TTL", None, "none")
    row = page.find_element(By.CSS_SELECTOR, f'{tid("freeze-row")}[data-transaction-id="fb-ttl"]')
    allocation = by_id["fb-ttl"]["allocations"][0]
    assert "60" in row.text and allocation["account_id"] in row.text
    # gone after an unfreeze through the API (the page's Refresh reloads the section and balance)
    api(port, "POST", "/v1/billing/unfreeze", {"transaction_id": "fb-ttl"})
    find(page, "freezes-refresh").click()
    wait(page).until(lambda d: freeze_rows(d) == ["fb-plain", "fb-auto"])
    wait(page).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, tid("balance-frozen")), "35"))
    assert find(page, "balance-frozen").text == "35"


def test_freezes_page_with_next(server: Server, page: WebDriver) -> None:
    port = server.port
    customer = "frz-browser-many"
    api(port, "POST", "/v1/customers/deposit", {"customer_id": customer, "amount": 1000})
    for i in range(MANY_FREEZES):
        api(port, "POST", "/v1/billing/freeze", {"customer_id": customer, "amount": 1, "transaction_id": f"fbm-{i:02d}"})
    first = api(port, "GET", f"/v1/customers/{customer}/freezes?limit=20")
    second = api(port, "GET", f"/v1/customers/{customer}/freezes?limit=20&cursor={first['next_cursor']}")
    sign_in(page, API_KEY)
    open_customer(page, customer)
    wait(page).until(lambda d: freeze_rows(d) == [item["transaction_id"] for item in first["items"]])
    wait(page).until(ec.element_to_be_clickable((By.CSS_SELECTOR, tid("freezes-next")))).click()
    wait(page).until(lambda d: freeze_rows(d) == [item["transaction_id"] for item in second["items"]])
    assert freeze_rows(page) == ["fbm-01", "fbm-00"]
    assert not find(page, "freezes-next").is_enabled()


def test_a_freeze_that_falls_due_leaves_the_page_by_itself(server: Server, page: WebDriver) -> None:
    port = server.port
    customer = "frz-browser-due"
    api(port, "POST", "/v1/customers/deposit", {"customer_id": customer, "amount": 100})
    api(port, "POST", "/v1/billing/freeze", {"customer_id": customer, "amount": 9, "transaction_id": "fbd-keep"})
    api(port, "POST", "/v1/billing/freeze", {"customer_id": customer, "amount": 4, "transaction_id": "fbd-due",
                                             "unfreeze_after_seconds": 6})  # fmt: skip
    sign_in(page, API_KEY)
    open_customer(page, customer)
    # The page normally shows it counting down first (6 s are plenty to load it); on a machine
    # slow enough to load it later, the server had settled it already. Either way the row goes
    # and the balance is reloaded without a click (no timing is asserted).
    first = wait(page).until(lambda d: freeze_rows(d))
    assert first in (["fbd-due", "fbd-keep"], ["fbd-keep"]), first
    wait(page).until(lambda d: freeze_rows(d) == ["fbd-keep"])
    wait(page).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, tid("balance-frozen")), "9"))
    assert find(page, "balance-frozen").text == "9"
    unfrozen = api(port, "GET", f"/v1/customers/{customer}/ledger?transaction_id=fbd-due")["items"]
    assert [entry["operation_type"] for entry in unfrozen] == ["UNFREEZE", "FREEZE"]
