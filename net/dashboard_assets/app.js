// Tally dashboard: one page, vanilla JS, served by Tally itself (net/dashboard.py).
//
// Rules this file keeps:
// - The key lives in sessionStorage (this tab only) and goes out only as `Authorization: Bearer`;
//   never in a URL. An admin key names its project in `X-Tally-Project` on /v1 routes.
// - Text from the API (customer ids, names, metadata, labels) is rendered with textContent and
//   setAttribute only: never innerHTML, never an attribute that runs code.
// - Server-side paging only: one page of customers or ledger entries is in memory at a time; the
//   previous pages are a stack of cursors, so "Newer" never refetches from the start.
// - Each view's loads carry a sequence number; a late answer for an older request is dropped.
"use strict";

(() => {
  const STORE_KEY = "tally.dashboard.key";
  const STORE_PROJECT = "tally.dashboard.project";
  const CUSTOMER_PAGE = 25;
  const SEARCH_DELAY_MS = 250;
  const FREEZE_PAGE = 20;
  const TICK_MS = 1000;

  const $ = (id) => document.getElementById(id);

  const state = {
    key: null,
    admin: false,
    project: null, // the project acted on: the admin's choice, or the project key's own
    view: "signin",
    customers: { prefix: "", cursors: [null], index: 0, seq: 0 },
    customer: { id: null, seq: 0 },
    ledger: { cursors: [null], index: 0, seq: 0, filters: {} },
    freezes: { cursors: [null], index: 0, seq: 0, due: new Set() },
    keysSeq: 0,
  };

  // -- rendering helpers: text only ------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function td(value, cls) {
    return el("td", { class: cls }, value === null || value === undefined ? "—" : value);
  }

  function num(value) {
    return td(value, "num");
  }

  function time(value) {
    return value ? value.replace("T", " ").replace(/\.\d{3}Z$/, "Z") : null;
  }

  function fill(tbody, rows, columns, emptyText) {
    if (rows.length === 0) {
      rows = [el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText))];
    }
    tbody.replaceChildren(...rows);
  }

  function say(text, isError) {
    const status = $("status");
    status.textContent = text || "";
    status.classList.toggle("error", Boolean(isError));
  }

  // -- the API -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, { method = "GET", params = null, body = null, key = state.key } = {}) {
    let url = path;
    if (params) {
      const query = new URLSearchParams();
      for (const [name, value] of Object.entries(params)) {
        if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
      }
      const text = query.toString();
      if (text) url += "?" + text;
    }
    const headers = { Authorization: "Bearer " + key, Accept: "application/json" };
    if (state.admin && state.project && path.startsWith("/v1/")) headers["X-Tally-Project"] = state.project;
    if (body !== null) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method, headers, body: body === null ? undefined : JSON.stringify(body),
        cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
      });
    } catch (err) {
      throw new ApiError(0, "network_error", "the server could not be reached");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || "http_" + response.status, error.message || response.statusText);
    }
    return data;
  }

  function failed(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut("Signed out: " + err.code + " (" + err.message + ")");
      return;
    }
    const code = err instanceof ApiError ? err.code + ": " : "";
    say(code + err.message, true);
  }

  function customerPath(id) {
    return "/v1/customers/" + encodeURIComponent(id);
  }

  // -- views -------------------------------------------------------------------------------------

  const VIEWS = ["signin", "customers", "customer", "keys"];

  function show(view) {
    state.view = view;
    for (const name of VIEWS) $(name + "-view").hidden = name !== view;
    const signedIn = view !== "signin";
    $("nav").hidden = !signedIn;
    $("session").hidden = !signedIn;
    $("nav-keys").hidden = !state.admin;
    $("project-box").hidden = !state.admin;
    $("nav-customers").setAttribute("aria-current", view === "customers" || view === "customer" ? "page" : "false");
    $("nav-keys").setAttribute("aria-current", view === "keys" ? "page" : "false");
  }

  // -- sign in / out -----------------------------------------------------------------------------

  async function signIn(key) {
    $("signin-error").textContent = "";
    let session;
    try {
      session = await api("/dashboard/session", { key });
    } catch (err) {
      $("signin-error").textContent = "Sign-in failed: " + (err.code ? err.code + ": " : "") + err.message;
      sessionStorage.removeItem(STORE_KEY);
      return;
    }
    state.key = key;
    state.admin = session.admin;
    state.project = session.project;
    sessionStorage.setItem(STORE_KEY, key);
    $("api-key").value = "";
    $("who").textContent = session.admin ? "admin key" : "project key · " + session.project;
    if (session.admin) {
      const ok = await loadProjects(sessionStorage.getItem(STORE_PROJECT));
      if (!ok) return;
    }
    openCustomers();
  }

  function signOut(message) {
    state.key = null;
    state.admin = false;
    state.project = null;
    sessionStorage.removeItem(STORE_KEY);
    sessionStorage.removeItem(STORE_PROJECT);
    $("customer-rows").replaceChildren();
    $("ledger-rows").replaceChildren();
    $("freeze-rows").replaceChildren();
    $("key-rows").replaceChildren();
    $("key-secret").textContent = "";
    $("key-created").hidden = true;
    say("");
    show("signin");
    $("signin-error").textContent = message || "";
    $("api-key").focus();
  }

  async function loadProjects(wanted) {
    let projects;
    try {
      projects = (await api("/admin/v1/projects")).items;
    } catch (err) {
      failed(err);
      return false;
    }
    const select = $("project-select");
    const options = projects.map((p) => el("option", { value: p.name }, p.name + " (" + p.customers + " customers)"));
    select.replaceChildren(...options);
    const names = projects.map((p) => p.name);
    const pick = names.includes(wanted) ? wanted : names.includes(state.project) ? state.project : names[0] || null;
    if (pick !== null) select.value = pick;
    setProject(pick);
    if (pick === null) say("No project yet: create a key for a new project under Keys.");
    return true;
  }

  function setProject(name) {
    state.project = name;
    if (name) sessionStorage.setItem(STORE_PROJECT, name);
    $("key-project").value = name || "";
  }

  // -- customers ---------------------------------------------------------------------------------

  function openCustomers() {
    show("customers");
    say("");
    if (!state.project) {
      fill($("customer-rows"), [], 8, "Choose a project.");
      return;
    }
    loadCustomers();
  }

  function searchCustomers(prefix) {
    const list = state.customers;
    list.prefix = prefix;
    list.cursors = [null];
    list.index = 0;
    loadCustomers();
  }

  async function loadCustomers() {
    const list = state.customers;
    const seq = ++list.seq;
    const params = { limit: CUSTOMER_PAGE, cursor: list.cursors[list.index], prefix: list.prefix };
    let page;
    try {
      page = await api("/v1/customers", { params });
    } catch (err) {
      if (seq === list.seq) failed(err);
      return;
    }
    if (seq !== list.seq) return;
    list.cursors.length = list.index + 1;
    if (page.has_more) list.cursors.push(page.next_cursor);
    const rows = page.items.map(customerRow);
    fill($("customer-rows"), rows, 8, list.prefix ? "No customer id starts with that." : "No customers yet.");
    const first = list.index * CUSTOMER_PAGE;
    $("customers-summary").textContent = page.items.length
      ? `Customers ${first + 1}–${first + page.items.length} of ${page.total_count}` + (list.prefix ? " matching" : "")
      : "";
    $("customers-first").disabled = list.index === 0;
    $("customers-prev").disabled = list.index === 0;
    $("customers-next").disabled = !page.has_more;
  }

  function customerRow(item) {
    const open = el("button", { type: "button", class: "link" }, item.customer_id);
    open.addEventListener("click", (event) => {
      event.stopPropagation();
      openCustomer(item.customer_id);
    });
    const row = el("tr", { "data-testid": "customer-row", "data-customer-id": item.customer_id, class: "clickable" },
      el("td", {}, open), td(item.name), td(item.email),
      num(item.balance.total), num(item.balance.used), num(item.balance.frozen), num(item.balance.available),
      td(time(item.created_at)));
    row.addEventListener("click", () => openCustomer(item.customer_id));
    return row;
  }

  // -- one customer ------------------------------------------------------------------------------

  function openCustomer(id) {
    state.customer.id = id;
    state.ledger.cursors = [null];
    state.ledger.index = 0;
    state.freezes.cursors = [null];
    state.freezes.index = 0;
    state.freezes.due.clear();
    for (const name of ["balance-total", "balance-used", "balance-frozen", "balance-available"]) $(name).textContent = "";
    $("customer-title").textContent = id;
    $("customer-facts").replaceChildren();
    $("wallet-rows").replaceChildren();
    $("bucket-rows").replaceChildren();
    $("ledger-rows").replaceChildren();
    $("freeze-rows").replaceChildren();
    $("freezes-summary").textContent = "";
    $("customer-metadata").textContent = "";
    show("customer");
    say("");
    $("customer-title").focus();
    loadCustomer();
    loadFreezes();
    loadLedger();
  }

  async function loadCustomer() {
    const seq = ++state.customer.seq;
    let customer;
    try {
      customer = await api(customerPath(state.customer.id));
    } catch (err) {
      if (seq === state.customer.seq) failed(err);
      return;
    }
    if (seq !== state.customer.seq) return;
    renderCustomer(customer);
  }

  function renderCustomer(customer) {
    const balance = customer.balance;
    $("balance-total").textContent = String(balance.total);
    $("balance-used").textContent = String(balance.used);
    $("balance-frozen").textContent = String(balance.frozen);
    $("balance-available").textContent = String(balance.available);
    const facts = [["Name", customer.name], ["Email", customer.email], ["Created", time(customer.created_at)]];
    $("customer-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null ? "—" : v)]));
    const walletRows = [];
    for (const [wallet, w] of Object.entries(customer.wallets || {})) {
      walletRows.push(el("tr", { class: "group" }, el("th", { scope: "row" }, wallet), td("all sources"),
        num(w.total), num(w.used), num(w.frozen), num(w.available), td(null), td(null)));
      for (const s of w.sources || []) {
        walletRows.push(el("tr", {}, td(""), td(s.source), num(s.total), num(s.used), num(s.frozen), num(s.available),
          td(time(s.starts_at)), td(time(s.expires_at))));
      }
    }
    fill($("wallet-rows"), walletRows, 8, "No credit yet.");
    const buckets = (customer.accounts || []).map((a) => el("tr", {}, td(a.account_id), td(a.wallet), td(a.source),
      num(a.total), num(a.used), num(a.frozen), num(a.available), td(time(a.starts_at) || "always"),
      td(time(a.expires_at) || "never")));
    fill($("bucket-rows"), buckets, 9, "No bucket valid now.");
    const metadata = customer.metadata;
    $("customer-metadata").textContent = metadata === null || metadata === undefined ? "—" : JSON.stringify(metadata, null, 2);
  }

  // -- open freezes: GET /v1/customers/{id}/freezes (newest first; TTLs count down here) ------------

  async function loadFreezes() {
    const freezes = state.freezes;
    const seq = ++freezes.seq;
    const params = { limit: FREEZE_PAGE, cursor: freezes.cursors[freezes.index] };
    $("freezes-next").disabled = true;
    let page;
    try {
      page = await api(customerPath(state.customer.id) + "/freezes", { params });
    } catch (err) {
      if (seq === freezes.seq) failed(err);
      return;
    }
    if (seq !== freezes.seq) return;
    freezes.cursors.length = freezes.index + 1;
    if (page.has_more) freezes.cursors.push(page.next_cursor);
    fill($("freeze-rows"), page.items.map(freezeRow), 9, "No open freezes.");
    const first = freezes.index * FREEZE_PAGE;
    $("freezes-summary").textContent = page.items.length
      ? `Open freezes ${first + 1}–${first + page.items.length} of ${page.total_count}, newest first`
      : "";
    $("freezes-first").disabled = freezes.index === 0;
    $("freezes-prev").disabled = freezes.index === 0;
    $("freezes-next").disabled = !page.has_more;
    tick();
  }

  function freezeRow(item) {
    const parts = item.allocations.map((a) => a.amount + " from " + a.wallet + "/" + a.source + " (" + a.account_id + ")");
    const left = el("td", { "data-testid": "freeze-ttl", "data-settle-at": item.settle_at,
      "data-transaction-id": item.transaction_id, class: "num" }, item.settle_at ? "" : "no TTL");
    return el("tr", { "data-testid": "freeze-row", "data-transaction-id": item.transaction_id },
      td(item.transaction_id), num(item.amount), td(parts.join(", ")), td(time(item.frozen_at)),
      td(item.settle_action || "none"), td(time(item.settle_at)), left, td(item.business_type), td(item.description));
  }

  function remaining(ms) {
    if (ms <= 0) return "due";
    const s = Math.ceil(ms / 1000);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    const parts = d ? [d + "d", h + "h", m + "m"] : h ? [h + "h", m + "m", (s % 60) + "s"] : m ? [m + "m", (s % 60) + "s"] : [s + "s"];
    return parts.join(" ");
  }

  // Once a second: each TTL cell shows the time left to its settle_at (the server's clock may
  // differ a little). A freeze that falls due is settled by the server on the next read: reload
  // the freezes and the balance once for it.
  function tick() {
    const now = Date.now();
    let fellDue = false;
    for (const cell of document.querySelectorAll("#freeze-rows td[data-settle-at]")) {
      const ms = Date.parse(cell.getAttribute("data-settle-at")) - now;
      cell.textContent = remaining(ms);
      const id = cell.getAttribute("data-transaction-id");
      if (ms <= 0 && !state.freezes.due.has(id)) {
        state.freezes.due.add(id);
        fellDue = true;
      }
    }
    if (fellDue && state.view === "customer") {
      setTimeout(() => { loadCustomer(); loadFreezes(); loadLedger(); }, TICK_MS);
    }
  }

  function freezesStep(delta) {
    const freezes = state.freezes;
    const index = freezes.index + delta;
    if (index < 0 || index >= freezes.cursors.length) return;
    freezes.index = index;
    loadFreezes();
  }

  // -- the ledger --------------------------------------------------------------------------------

  function utc(value) {
    if (!value) return null;
    return (value.length === 16 ? value + ":00" : value) + "Z";
  }

  function readFilters() {
    return {
      operation_type: $("f-operation-type").value,
      transaction_id: $("f-transaction-id").value,
      wallet: $("f-wallet").value,
      business_type: $("f-business-type").value,
      from: utc($("f-from").value),
      to: utc($("f-to").value),
      limit: $("f-limit").value,
    };
  }

  function restartLedger() {
    state.ledger.cursors = [null];
    state.ledger.index = 0;
    loadLedger();
  }

  async function loadLedger() {
    const ledger = state.ledger;
    const seq = ++ledger.seq;
    const filters = readFilters();
    const params = { ...filters, cursor: ledger.cursors[ledger.index] };
    $("ledger-next").disabled = true;
    let page;
    try {
      page = await api(customerPath(state.customer.id) + "/ledger", { params });
    } catch (err) {
      if (seq === ledger.seq) failed(err);
      return;
    }
    if (seq !== ledger.seq) return;
    ledger.cursors.length = ledger.index + 1;
    if (page.has_more) ledger.cursors.push(page.next_cursor);
    fill($("ledger-rows"), page.items.map(ledgerRow), 10, "No entries match.");
    const first = ledger.index * Number(filters.limit);
    $("ledger-summary").textContent = page.items.length
      ? `Entries ${first + 1}–${first + page.items.length} of ${page.total_count}, newest first`
      : "";
    $("ledger-first").disabled = ledger.index === 0;
    $("ledger-prev").disabled = ledger.index === 0;
    $("ledger-next").disabled = !page.has_more;
  }

  function ledgerRow(entry) {
    return el("tr", { "data-testid": "ledger-row", "data-entry-id": entry.id, "data-operation-type": entry.operation_type },
      td(time(entry.created_at)), el("td", {}, el("span", { class: "op op-" + entry.operation_type.toLowerCase() }, entry.operation_type)),
      num(entry.amount), td(entry.wallet), td(entry.source), td(entry.transaction_id), td(entry.business_type),
      td(entry.description), td(entry.account_id), td(entry.id, "muted"));
  }

  function ledgerStep(delta) {
    const ledger = state.ledger;
    const index = ledger.index + delta;
    if (index < 0 || index >= ledger.cursors.length) return;
    ledger.index = index;
    loadLedger();
  }

  // -- keys (admin) ------------------------------------------------------------------------------

  function openKeys() {
    if (!state.admin) return;
    show("keys");
    say("");
    loadKeys();
  }

  async function loadKeys() {
    const seq = ++state.keysSeq;
    let keys;
    try {
      keys = (await api("/admin/v1/keys", { params: { project: state.project } })).items;
    } catch (err) {
      if (seq === state.keysSeq) failed(err);
      return;
    }
    if (seq !== state.keysSeq) return;
    keys.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    fill($("key-rows"), keys.map(keyRow), 6, "No keys for this project.");
    const active = keys.filter((k) => !k.revoked_at).length;
    $("keys-summary").textContent = state.project ? `${active} active of ${keys.length} keys in ${state.project}` : "";
  }

  function keyRow(key) {
    let action = td(null);
    if (!key.revoked_at) {
      const revoke = el("button", { type: "button", class: "danger", "data-testid": "key-revoke",
        "aria-label": "Revoke " + key.key_id }, "Revoke");
      revoke.addEventListener("click", () => revokeKey(key.key_id, revoke));
      action = el("td", {}, revoke);
    }
    return el("tr", { "data-testid": "key-row", "data-key-id": key.key_id },
      td(key.key_id), td(key.project), td(key.label), td(time(key.created_at)), td(time(key.revoked_at) || "active"), action);
  }

  async function createKey() {
    const project = $("key-project").value;
    const label = $("key-label").value;
    const body = label ? { project, label } : { project };
    $("key-create").disabled = true;
    let created;
    try {
      created = await api("/admin/v1/keys", { method: "POST", body });
    } catch (err) {
      failed(err);
      return;
    } finally {
      $("key-create").disabled = false;
    }
    $("key-secret").textContent = created.key;
    $("key-created-project").textContent = created.project;
    $("key-created").hidden = false;
    $("key-label").value = "";
    say("Key " + created.key_id + " created.");
    if (created.project !== state.project) {
      await loadProjects(created.project); // a new project appears in the list
    }
    loadKeys();
  }

  async function revokeKey(keyId, button) {
    button.disabled = true;
    try {
      const revoked = await api("/admin/v1/keys/" + encodeURIComponent(keyId) + "/revoke", { method: "POST" });
      say("Key " + revoked.key_id + " revoked.");
    } catch (err) {
      button.disabled = false;
      failed(err);
      return;
    }
    loadKeys();
  }

  // -- wiring ------------------------------------------------------------------------------------

  function wire() {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (key) signIn(key);
    });
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("nav-customers").addEventListener("click", openCustomers);
    $("nav-keys").addEventListener("click", openKeys);
    $("project-select").addEventListener("change", (event) => {
      setProject(event.target.value);
      if (state.view === "keys") {
        loadKeys();
        return;
      }
      state.customers.cursors = [null];
      state.customers.index = 0;
      openCustomers();
    });
    let timer = null;
    const search = $("customer-search");
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => searchCustomers(search.value), SEARCH_DELAY_MS);
    });
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(timer);
      searchCustomers(search.value);
    });
    $("customers-first").addEventListener("click", () => { state.customers.index = 0; loadCustomers(); });
    $("customers-prev").addEventListener("click", () => { state.customers.index = Math.max(0, state.customers.index - 1); loadCustomers(); });
    $("customers-next").addEventListener("click", () => {
      if (state.customers.index + 1 < state.customers.cursors.length) { state.customers.index += 1; loadCustomers(); }
    });
    $("back-to-customers").addEventListener("click", openCustomers);
    $("ledger-filters").addEventListener("submit", (event) => { event.preventDefault(); restartLedger(); });
    $("ledger-clear").addEventListener("click", () => { $("ledger-filters").reset(); restartLedger(); });
    $("ledger-first").addEventListener("click", () => ledgerStep(-state.ledger.index));
    $("ledger-prev").addEventListener("click", () => ledgerStep(-1));
    $("ledger-next").addEventListener("click", () => ledgerStep(1));
    $("freezes-refresh").addEventListener("click", () => { loadCustomer(); loadFreezes(); loadLedger(); });
    $("freezes-first").addEventListener("click", () => freezesStep(-state.freezes.index));
    $("freezes-prev").addEventListener("click", () => freezesStep(-1));
    $("freezes-next").addEventListener("click", () => freezesStep(1));
    $("key-form").addEventListener("submit", (event) => { event.preventDefault(); createKey(); });
  }

  function start() {
    wire();
    setInterval(tick, TICK_MS);
    $("customer-title").setAttribute("tabindex", "-1");
    const key = sessionStorage.getItem(STORE_KEY);
    show("signin");
    if (key) signIn(key);
    else $("api-key").focus();
  }

  start();
})();
