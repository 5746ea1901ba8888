// The alerts page's table (templates/alerts/): live (ticks move each row's price, age and
// distance; a fired alert's notification updates its row), sorted, filtered and searched in
// the browser, focus kept through inline edits. Rows carry what this needs in data-*
// attributes (_row.html); without this script the table still works. It tells the page's
// chart (alert-chart.js) through TB.alerts and the events `tb:alerts-changed`, `tb:alert-fired`.
(() => {
  const body = document.getElementById("alert-rows");
  if (!body) return;
  const $ = (id) => document.getElementById(id);
  const table = $("alerts-table");
  const tools = $("alert-tools");
  const search = $("alert-search"), bySymbol = $("alert-filter-symbol");
  const byStatus = $("alert-filter-status"), sortBy = $("alert-sort");
  const count = $("alert-count"), noMatch = $("alerts-nomatch");

  // --- how far each alert is from firing (as webapp/alerts/readings.py measures it)
  const LEVELS = ["above", "below", "crossing_up", "crossing_down", "crossing"];
  const CHANNELS = ["channel_exit", "channel_enter"];
  const MOVES = ["pct_up", "pct_down"];

  // A move is measured from its window's low (pct_up) or high (pct_down): worked out once
  // from the server's distance and last price, then pushed on by each new extreme. The
  // window also forgets old extremes, which only the server sees: a reload corrects that.
  function extreme(row, price) {
    const d = row.dataset, up = d.kind === "pct_up";
    if (!d.extreme) {
      if (!Number(d.last) || d.distance === "" || d.distance === undefined) return null;
      const moved = Number(d.pct) - Number(d.distance);
      d.extreme = up ? d.last / (1 + moved / 100) : d.last / (1 - moved / 100);
    }
    let value = Number(d.extreme);
    if (price) value = up ? Math.min(value, price) : Math.max(value, price);
    d.extreme = value;
    return value;
  }

  function distance(row, price) {
    const d = row.dataset;
    if (LEVELS.includes(d.kind)) return (d.level - price) / price * 100;
    if (CHANNELS.includes(d.kind)) {
      const low = Number(d.low), high = Number(d.high);
      const bound = Math.abs(low - price) <= Math.abs(high - price) ? low : high;
      return (bound - price) / price * 100;
    }
    if (!MOVES.includes(d.kind)) return null;
    const from = extreme(row, price);
    if (!from) return null;
    const moved = d.kind === "pct_up" ? (price / from - 1) * 100 : (1 - price / from) * 100;
    return d.pct - moved;
  }

  function distanceText(kind, value) {
    if (MOVES.includes(kind)) return value.toFixed(2) + " pts";
    return (value >= 0 ? "+" : "") + value.toFixed(2) + " %";
  }

  // --- live: ticks and fired alerts
  function onTick(tick) {
    const price = Number(tick.price);
    if (!(price > 0)) return;
    for (const row of rowsOf(tick.symbol)) {
      if (row.dataset.kind === "volume_above" || row.classList.contains("editing")) continue;
      const value = row.querySelector("[data-last-value]");
      if (value) value.textContent = tick.price;
      const away = distance(row, price);
      row.dataset.last = price;
      const age = row.querySelector("[data-age]");
      if (age) {
        age.dataset.ts = tick.ts;
        if (window.showAge) window.showAge(age, Date.now());
      }
      if (away === null || !Number.isFinite(away)) continue;
      row.dataset.distance = away;
      row.querySelector("[data-distance-cell]").textContent = distanceText(row.dataset.kind, away);
    }
    const quote = $("symbol-quote");
    if (quote && quote.dataset.symbol === tick.symbol) {
      const shown = quote.querySelector("[data-quote-price]");
      const age = quote.querySelector("[data-age]");
      if (shown) shown.textContent = tick.price;
      if (age) { age.dataset.ts = tick.ts; if (window.showAge) window.showAge(age, Date.now()); }
    }
    if (sortBy.value === "distance") later();
  }

  // The notification's own markup says which alert fired, where and when (inbox/_item.html).
  function onNotification(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    const item = template.content.querySelector("[data-nid]");
    if (!item || !item.dataset.alertId) return;
    const time = item.querySelector("time[datetime]");
    const n = {
      id: item.dataset.nid, alert_id: Number(item.dataset.alertId), symbol: item.dataset.symbol,
      current_price: item.dataset.price === "" ? null : Number(item.dataset.price),
      created_at: Number(item.dataset.created),
      timestamp: time ? time.getAttribute("datetime") : new Date().toISOString(),
    };
    const row = $("alert-" + n.alert_id);
    if (row && !row.classList.contains("editing")) fired(row, n);
    document.dispatchEvent(new CustomEvent("tb:alert-fired", { detail: n }));
  }

  function fired(row, n) {
    const cell = row.querySelector("[data-fired-cell]");
    const time = document.createElement("time");
    time.setAttribute("datetime", n.timestamp);
    time.textContent = n.timestamp.slice(0, 19).replace("T", " ") + " UTC";
    const at = document.createElement("small");
    at.className = "muted";
    at.textContent = "at " + (n.current_price ?? "–");
    cell.replaceChildren(time, document.createElement("br"), at);
    if (window.localTimes) window.localTimes(cell);
    row.dataset.fired = n.timestamp;
    if (row.dataset.mode === "once" && row.dataset.status === "active") {
      row.dataset.status = "fired";
      const state = row.querySelector("[data-state]");
      if (state) state.textContent = "fired";
    }
    row.classList.add("just-fired");
    row.addEventListener("animationend", () => row.classList.remove("just-fired"), { once: true });
    later();
  }

  TB.charts.onTick(onTick);
  TB.charts.on("notification", onNotification);

  // --- sort, filters and search
  const rows = () => [...body.querySelectorAll("tr[data-alert-id]")];
  const rowsOf = (symbol) => rows().filter((row) => row.dataset.symbol === symbol);
  const symbolsOf = () => [...new Set(rows().map((row) => row.dataset.symbol))].sort();
  const time = (row) => Date.parse(row.dataset.fired || "") || 0;
  const away = (row) => {
    const value = parseFloat(row.dataset.distance);
    return Number.isFinite(value) ? Math.abs(value) : Infinity;
  };
  const ORDERS = {
    newest: (a, b) => b.dataset.alertId - a.dataset.alertId,
    symbol: (a, b) => a.dataset.symbol.localeCompare(b.dataset.symbol) || ORDERS.newest(a, b),
    distance: (a, b) => away(a) - away(b) || ORDERS.newest(a, b),
    fired: (a, b) => time(b) - time(a) || ORDERS.newest(a, b),
  };
  const SORTED_COLUMN = { symbol: ["symbol", "ascending"], distance: ["distance", "ascending"],
    fired: ["fired", "descending"] };

  function options(select, values, first) {
    const chosen = select.value;
    const wanted = (first ? [first] : []).concat(values.map((v) => [v, v]));
    const have = [...select.options].map((o) => o.value + "\n" + o.text).join("|");
    if (have === wanted.map(([v, t]) => v + "\n" + t).join("|")) return;
    select.replaceChildren(...wanted.map(([value, text]) => new Option(text, value)));
    select.value = values.includes(chosen) ? chosen : (first ? first[0] : values[0] || "");
  }

  function apply() {
    pending = false;
    options(bySymbol, symbolsOf(), ["", "All symbols"]);
    const query = search.value.trim().toLowerCase();
    const list = rows();
    let shown = 0;
    for (const row of list) {
      const d = row.dataset;
      // a row being edited, or just added (until the filters change), shows whatever they say
      const match = row.classList.contains("editing") || "added" in d || (
        (!bySymbol.value || d.symbol === bySymbol.value)
        && (!byStatus.value || d.status === byStatus.value)
        && (!query || d.symbol.toLowerCase().includes(query)
            || (d.note || "").toLowerCase().includes(query)));
      row.hidden = !match;
      if (match) shown += 1;
    }
    // moving a row takes focus from what is in it: the order waits until focus leaves
    const sorted = list.slice().sort(ORDERS[sortBy.value] || ORDERS.newest);
    if (sorted.some((row, i) => row !== list[i]) && !body.contains(document.activeElement)) {
      sorted.forEach((row) => body.appendChild(row));
    }
    const [key, direction] = SORTED_COLUMN[sortBy.value] || [];
    table.querySelectorAll("th[data-sort-key]").forEach((th) => {
      if (th.dataset.sortKey === key) th.setAttribute("aria-sort", direction);
      else th.removeAttribute("aria-sort");
    });
    const filtered = query || bySymbol.value || byStatus.value;
    count.hidden = !list.length;
    const alerts = (n) => `${n} alert${n === 1 ? "" : "s"}`;
    count.textContent = filtered ? `${shown} of ${alerts(list.length)} shown.` : `${alerts(list.length)}.`;
    body.dataset.shown = shown;
    noMatch.hidden = shown > 0 || !list.length;
    document.dispatchEvent(new CustomEvent("tb:alerts-changed"));
  }

  let pending = false;
  function later() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(apply);
  }

  tools.hidden = false;
  tools.addEventListener("submit", (event) => event.preventDefault());
  const filtersChanged = () => {
    body.querySelectorAll("tr[data-added]").forEach((row) => delete row.dataset.added);
    later();
  };
  tools.addEventListener("input", filtersChanged);
  tools.addEventListener("change", filtersChanged);
  // rows come and go by htmx swaps (create, edit, pause, delete): sort and filter them again
  new MutationObserver(later).observe(body, { childList: true });
  body.addEventListener("focusout", later);

  // --- focus through inline edits, duplicate
  const editing = new Set();
  document.addEventListener("htmx:load", (event) => {
    const el = event.detail.elt;
    if (!(el instanceof HTMLTableRowElement) || !el.dataset.alertId) return;
    if (el.classList.contains("editing")) {
      editing.add(el.id);
      const field = el.querySelector('[aria-invalid="true"]')
        || el.querySelector("input:not([type=hidden]), select");
      if (field) field.focus();
    } else if (editing.delete(el.id)) {
      const edit = el.querySelector("a[href$='/edit']");
      if (edit) edit.focus();
    }
  });
  // Duplicate fills the create form: bring it into view, at the field one changes most
  document.addEventListener("htmx:afterSettle", (event) => {
    const form = event.target;
    const path = (event.detail.pathInfo || {}).requestPath || "";
    if (form.id !== "alert-form" || !/\/copy$/.test(path)) return;
    form.scrollIntoView({ block: "start" });
    const field = ["price", "pct", "low"].map((name) => form.elements[name])
      .find((el) => el && !el.disabled);
    if (field) field.focus();
  });

  // where each alert of a symbol sits on a price chart: [{price, title, active}]
  function levels(symbol) {
    const out = [];
    for (const row of rowsOf(symbol)) {
      const d = row.dataset, id = "#" + d.alertId;
      const active = d.status === "active";
      if (LEVELS.includes(d.kind)) out.push({ price: Number(d.level), title: id, active });
      else if (CHANNELS.includes(d.kind)) {
        out.push({ price: Number(d.low), title: id + " low", active });
        out.push({ price: Number(d.high), title: id + " high", active });
      } else if (MOVES.includes(d.kind)) {
        const from = extreme(row, 0);
        if (from) {
          const pct = Number(d.pct) / 100;
          out.push({ price: d.kind === "pct_up" ? from * (1 + pct) : from * (1 - pct),
            title: id + (d.kind === "pct_up" ? " +" : " −") + d.pct + "%", active });
        }
      }
    }
    return out.filter((l) => l.price > 0);
  }

  window.TB.alerts = { symbols: symbolsOf, levels };
  apply();
})();
