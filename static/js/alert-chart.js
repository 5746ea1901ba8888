// The alerts page's chart (templates/alerts/_chart.html): one symbol's price on a time axis,
// live, with the user's alerts on it as price lines (TB.alerts, from the table, says where)
// and dots where they fired. The box's data-* say what it shows (charts.js): tests read them.
(() => {
  const box = document.getElementById("alert-chart");
  if (!box || !TB.charts.ready || !TB.alerts) return;
  const tools = document.getElementById("chart-tools");
  const pick = document.getElementById("chart-symbol");
  const range = document.getElementById("chart-range");
  const caption = document.getElementById("chart-summary");
  const RANGES = { live: { step: 1, span: 900 }, week: { step: 900, span: 7 * 86400 } };
  let chart = null, symbol = null, loading = 0, drawn = "";

  function summary() {
    const d = box.dataset;
    const last = d.last ? `last ${d.last}` : "no trade seen yet";
    caption.textContent = `${symbol}: ${last}; ${d.levels} alert level line(s); `
      + `${d.markers} fire(s) shown. Times in your zone (${TB.charts.zone}).`;
  }

  // the alerts' lines, redrawn only when they move (an edit, a new alert, a move's window)
  function drawLevels() {
    const levels = TB.alerts.levels(symbol);
    const key = JSON.stringify(levels);
    if (key === drawn) return;
    drawn = key;
    chart.setLevels(levels);
  }

  async function show(wanted) {
    symbol = wanted;
    pick.value = wanted;
    box.dataset.symbol = wanted;
    box.dataset.ready = "false";
    if (!chart) chart = new TB.charts.PriceChart(box, RANGES[range.value]);
    const ticket = ++loading;
    let data = { points: [], fired: [] };
    try {
      const response = await fetch(box.dataset.url.replace(/SYMBOL$/, wanted),
        { headers: { Accept: "application/json" } });
      if (response.ok) data = await response.json();
    } catch (_) { /* no history: live ticks still draw */ }
    if (ticket !== loading) return;  // another symbol was picked meanwhile
    chart.setPoints(data.points);
    chart.setFired(data.fired);
    drawn = "";
    drawLevels();
    box.dataset.ready = "true";
    summary();
  }

  function sync() {
    const symbols = TB.alerts.symbols();
    if (pick.options.length !== symbols.length
        || symbols.some((s, i) => pick.options[i].value !== s)) {
      pick.replaceChildren(...symbols.map((s) => new Option(s, s)));
      if (symbols.includes(symbol)) pick.value = symbol;
    }
    tools.hidden = box.hidden = !symbols.length;
    if (!symbols.length) {
      caption.textContent = "Add an alert to chart its symbol here.";
      return;
    }
    if (!symbols.includes(symbol)) show(symbols[0]);
    else if (box.dataset.ready === "true") {
      drawLevels();
      summary();
    }
  }

  TB.charts.onTick((tick) => {
    if (tick.symbol !== symbol || box.dataset.ready !== "true") return;
    chart.add(Number(tick.ts), Number(tick.price));
    drawLevels();  // a move's line follows its window's extreme
    summary();
  });
  document.addEventListener("tb:alert-fired", (event) => {
    const n = event.detail;
    if (n.symbol !== symbol || !n.current_price || box.dataset.ready !== "true") return;
    chart.add(n.created_at, n.current_price);  // a fire is a trade: its dot sits on the line
    chart.addFired({ ts: n.created_at, price: n.current_price, alert_id: n.alert_id });
    summary();
  });
  document.addEventListener("tb:alerts-changed", sync);
  pick.addEventListener("change", () => show(pick.value));
  range.addEventListener("change", () => {
    if (!chart) return;
    const { step, span } = RANGES[range.value];
    chart.view(step, span);
    summary();
  });
  // a new alert (its row lands first in the table): chart its symbol
  document.addEventListener("htmx:afterSwap", (event) => {
    // the live feed's swaps (toasts, the badge) carry no target: not ours
    const { target, elt } = event.detail;
    if (target?.id !== "alert-rows" || !elt?.matches?.("#alert-form")) return;
    const newest = target.querySelector("tr[data-alert-id]");
    if (newest && newest.dataset.symbol !== symbol) show(newest.dataset.symbol);
  });
  sync();
})();
