// Price charts (TradingView Lightweight Charts, static/vendor/): prices on a time axis in the
// user's zone, the live price from tick events, levels as price lines, fires as markers.
//
// The library spaces points evenly whatever their times, so a chart draws a regular grid:
// one point per `step` seconds, each the last trade at or before its end. Gaps in trading
// then keep their width on the axis.
window.TB = window.TB || {};
TB.charts = (() => {
  const LC = window.LightweightCharts;
  const zone = (document.querySelector('meta[name="tz"]') || {}).content || "UTC";
  const MAX_POINTS = 5000;

  function format(options) {
    const base = { hour12: false, hourCycle: "h23", ...options };
    try { return new Intl.DateTimeFormat("en-GB", { timeZone: zone, ...base }); }
    catch (_) { return new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", ...base }); }
  }
  const FULL = format({ year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", timeZoneName: "short" });
  // in the order of the library's TickMarkType: year, month, day, time, time with seconds
  const TICKS = [format({ year: "numeric" }), format({ month: "short" }),
    format({ day: "numeric", month: "short" }), format({ hour: "2-digit", minute: "2-digit" }),
    format({ hour: "2-digit", minute: "2-digit", second: "2-digit" })];

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function options(mini) {
    const line = css("--line");
    return {
      autoSize: true,
      layout: { background: { type: "solid", color: css("--card") }, textColor: css("--muted"),
        fontFamily: getComputedStyle(document.body).fontFamily, fontSize: mini ? 10 : 12,
        attributionLogo: !mini },  // the dashboard credits TradingView once, in text
      grid: { vertLines: { color: line, visible: !mini }, horzLines: { color: line } },
      rightPriceScale: { visible: !mini, borderColor: line },
      timeScale: { timeVisible: true, secondsVisible: true, borderColor: line,
        tickMarkFormatter: (time, type) => (TICKS[type] || TICKS[3]).format(time * 1000) },
      localization: { timeFormatter: (time) => FULL.format(time * 1000) },
      // a phone scrolls the page over a chart; only a drag sideways moves the chart
      handleScroll: mini ? false : { mouseWheel: false, vertTouchDrag: false },
      handleScale: mini ? false : { mouseWheel: false, pinch: true, axisPressedMouseMove: true },
      crosshair: mini ? { vertLine: { visible: false }, horzLine: { visible: false } } : {},
    };
  }

  function decimals(values) {
    let most = 2;
    for (const v of values) {
      const text = String(v);
      if (!text.includes("e")) most = Math.max(most, (text.split(".")[1] || "").length);
    }
    return Math.min(most, 8);
  }

  // [[ms, price]] oldest first -> [{time, value}], one per `step` s from `from` (s) on
  function grid(points, step, from) {
    if (!points.length) return [];
    const slot = (ms) => Math.floor(ms / 1000 / step) * step;
    const last = slot(points[points.length - 1][0]);
    let t = Math.max(slot(points[0][0]), Math.floor(from / step) * step, last - MAX_POINTS * step);
    const out = [];
    let i = 0, value = null;
    for (; t <= last; t += step) {
      while (i < points.length && points[i][0] < (t + step) * 1000) value = points[i++][1];
      if (value !== null) out.push({ time: t, value });
    }
    return out;
  }

  class PriceChart {
    // el: the chart's box; it gets data-points, data-last and data-levels as the chart changes
    constructor(el, { mini = false, step = 1, span = 900 } = {}) {
      this.el = el;
      this.mini = mini;
      this.chart = LC.createChart(el, options(mini));
      const color = css("--info");
      this.series = this.chart.addSeries(LC.AreaSeries, { lineColor: color, lineWidth: 2,
        topColor: color + "55", bottomColor: color + "05", priceLineVisible: !mini,
        lastValueVisible: !mini, crosshairMarkerVisible: !mini,
        // the price axis spans the alerts' levels too, so every line is in sight
        autoscaleInfoProvider: (original) => this.withLevels(original()) });
      this.markers = LC.createSeriesMarkers(this.series, []);
      this.points = [];
      this.fired = [];
      this.lines = [];
      this.view(step, span);
    }

    // the grid: one point per `step` s, covering the last `span` s of the data
    view(step, span) {
      this.step = step;
      this.span = span;
      this.redraw();
    }

    setPoints(points) {
      this.points = points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
      this.redraw();
    }

    redraw() {
      const points = this.points;
      const end = points.length ? points[points.length - 1][0] / 1000 : 0;
      const data = grid(points, this.step, end - this.span);
      this.data = data;
      this.series.setData(data);
      this.series.applyOptions({ priceFormat: this.format(points.map((p) => p[1])) });
      this.drawMarkers();
      this.chart.timeScale().fitContent();
      this.mark();
    }

    format(values) {
      const precision = decimals(values.concat(this.lines.map((l) => l.options().price)));
      return { type: "price", precision, minMove: 10 ** -precision };
    }

    // a trade: extends the grid up to its slot (carrying the last price over quiet seconds)
    add(ms, price) {
      const points = this.points;
      if (!Number.isFinite(ms) || !Number.isFinite(price)) return;
      if (points.length && ms < points[points.length - 1][0]) return;  // older than shown
      points.push([ms, price]);
      const last = this.data[this.data.length - 1];
      const slot = Math.floor(ms / 1000 / this.step) * this.step;
      if (!last || slot - last.time > 600 * this.step || this.data.length > 2 * this.span / this.step + 600) {
        if (points.length > 2 * MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
        this.redraw();
        return;
      }
      for (let t = last.time + this.step; t < slot; t += this.step) this.push({ time: t, value: last.value });
      this.push({ time: slot, value: price });
      if (decimals([price]) > this.series.options().priceFormat.precision) {
        this.series.applyOptions({ priceFormat: this.format([price]) });
      }
      this.mark();
    }

    push(point) {
      const data = this.data;
      if (data.length && data[data.length - 1].time === point.time) data[data.length - 1] = point;
      else data.push(point);
      this.series.update(point);
    }

    withLevels(info) {
      const prices = this.lines.map((line) => line.options().price);
      if (!prices.length) return info;
      const range = info && info.priceRange;
      const low = Math.min(...prices, range ? range.minValue : Infinity);
      const high = Math.max(...prices, range ? range.maxValue : -Infinity);
      return { ...(info || {}), priceRange: { minValue: low, maxValue: high } };
    }

    // levels: [{price, title, active}]: one price line each
    setLevels(levels) {
      this.lines.forEach((line) => this.series.removePriceLine(line));
      const color = css("--accent");
      this.lines = levels.map((l) => this.series.createPriceLine({ price: l.price, color,
        lineWidth: 1, lineStyle: l.active ? 0 : 2, axisLabelVisible: true, title: l.title }));
      this.series.applyOptions({ priceFormat: this.format(this.points.map((p) => p[1])) });
      this.mark();
    }

    // fired: [{ts, price, alert_id}]: a marker each where it falls inside the chart
    setFired(fired) {
      this.fired = fired.slice().sort((a, b) => a.ts - b.ts);
      this.drawMarkers();
      this.mark();
    }

    addFired(fire) {
      this.setFired(this.fired.concat([fire]));
    }

    drawMarkers() {
      const data = this.data || [];
      if (!data.length) { this.markers.setMarkers([]); this.shown = 0; return; }
      const first = data[0].time, last = data[data.length - 1].time;
      const color = css("--bad");
      const shown = this.fired
        .map((f) => ({ time: Math.floor(f.ts / 1000 / this.step) * this.step, price: f.price,
          position: "atPriceMiddle", shape: "circle", color, text: "#" + f.alert_id }))
        .filter((m) => m.time >= first && m.time <= last);
      this.markers.setMarkers(shown);
      this.shown = shown.length;
    }

    mark() {
      const data = this.data || [];
      this.el.dataset.points = data.length;
      this.el.dataset.last = data.length ? data[data.length - 1].value : "";
      this.el.dataset.levels = this.lines.length;
      this.el.dataset.markers = this.shown || 0;
    }

    remove() {
      this.chart.remove();
    }
  }

  // Live events from the page's stream (htmx-ext-sse on <body>): fn(name, data) per event.
  const listeners = { tick: [], notification: [] };
  const sources = new WeakSet();  // a source that reconnects opens again: listen once
  document.addEventListener("htmx:sseOpen", (event) => {
    const source = event.detail.source;
    if (sources.has(source)) return;
    sources.add(source);
    for (const name of Object.keys(listeners)) {
      source.addEventListener(name, (message) => {
        listeners[name].forEach((fn) => fn(message.data));
      });
    }
  });
  function on(name, fn) { listeners[name].push(fn); }
  function onTick(fn) {
    on("tick", (data) => {
      let tick;
      try { tick = JSON.parse(data); } catch (_) { return; }
      fn(tick);
    });
  }

  return { ready: Boolean(LC), zone, PriceChart, on, onTick };
})();

// The dashboard's tickers: each sparkline becomes a small live chart with a time axis, and
// the 24 h change follows the price.
(() => {
  const tickers = document.querySelectorAll(".ticker[data-points]");
  if (!tickers.length || !TB.charts.ready) return;
  const charts = new Map();
  tickers.forEach((row) => {
    const box = row.querySelector("[data-mini-chart]");
    if (!box) return;
    box.hidden = false;
    const chart = new TB.charts.PriceChart(box, { mini: true, step: 1, span: 300 });
    chart.setPoints(JSON.parse(row.dataset.points || "[]"));
    row.classList.add("charted");  // the server's sparkline steps aside
    charts.set(row.dataset.symbol, { row, chart });
  });
  TB.charts.onTick((tick) => {
    const found = charts.get(tick.symbol);
    if (!found) return;
    found.chart.add(Number(tick.ts), Number(tick.price));
    const change = found.row.querySelector("[data-change]");
    const before = Number(found.row.dataset.dayAgo);
    if (!change || !before) return;
    const pct = (Number(tick.price) / before - 1) * 100;
    change.dataset.change = pct.toFixed(2);
    change.textContent = (pct >= 0 ? "+" : "") + pct.toFixed(2) + " % in 24 h";
    change.classList.toggle("up", pct >= 0);
    change.classList.toggle("down", pct < 0);
  });
})();
