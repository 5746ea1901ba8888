// Tickerbell's live feed on the page: toasts, prices, and what changed in other tabs.
// Loaded after app.js, whose leave, showAge and localTimes it uses.

// The live feed (htmx-ext-sse on <body>). The browser's own EventSource reconnect sends
// Last-Event-ID itself; when the extension has to make a new EventSource instead, it asks
// for what it missed with ?last_event_id= (the server prefers the header when both come).
let lastEventId = null;
if (window.htmx) {
  htmx.createEventSource = (url) => {
    const target = new URL(url, window.location.href);
    if (lastEventId) target.searchParams.set("last_event_id", lastEventId);
    return new EventSource(target, { withCredentials: true });
  };
}
document.addEventListener("htmx:sseMessage", (event) => {
  if (event.detail && event.detail.lastEventId) lastEventId = event.detail.lastEventId;
  const toasts = event.target;
  if (toasts.id !== "toasts") return;
  const newest = toasts.firstElementChild;
  if (newest) setTimeout(() => fade(newest), 8000);
  // the oldest go past four, but not one holding the focus (a keyboard user reading it)
  const held = [...toasts.children].filter((t) => !t.contains(document.activeElement));
  while (toasts.children.length > 4 && held.length) held.pop().remove();
});
// A toast's own Dismiss takes it away at once. From the keyboard (a click with no pointer:
// detail 0) the focus goes on to the next toast's; a pointer's click leaves the focus be, so
// the next toast fades in its time (a toast holding the focus stays).
document.addEventListener("click", (event) => {
  const close = event.target.closest(".toast-close");
  if (!close) return;
  const toast = close.closest(".toast");
  const next = toast.nextElementSibling || toast.previousElementSibling;
  toast.remove();
  if (event.detail === 0 && next) next.querySelector(".toast-close").focus();
});
// A toast goes after 8 s, but not from under a keyboard user's focus: it waits for it to leave.
function fade(toast) {
  if (!toast.isConnected) return;
  if (toast.contains(document.activeElement)) {
    setTimeout(() => fade(toast), 2000);  // looked at again, until the focus has gone
    return;
  }
  toast.remove();
}
// A notification already on the page (rendered with it, then replayed) is not added twice.
document.addEventListener("htmx:sseBeforeMessage", (event) => {
  if (event.detail.type !== "notification") return;
  const match = /id="(n-[\d-]+)"/.exec(event.detail.data);
  if (match && document.getElementById(match[1])) event.preventDefault();
});

// Price ticks: JSON, about one a second per watched symbol; redraw price and sparkline.
function sparkPoints(points, width, height) {
  if (points.length < 2) return "";
  const t0 = points[0][0], span = (points[points.length - 1][0] - t0) || 1;
  const prices = points.map((p) => p[1]);
  const low = Math.min(...prices), range = (Math.max(...prices) - low) || 1;
  return points.map(([t, p]) => ((t - t0) * width / span).toFixed(1) + "," +
    (height - (p - low) * height / range).toFixed(1)).join(" ");
}
function onTick(event) {
  let tick;
  try { tick = JSON.parse(event.data); } catch (_) { return; }
  const row = document.getElementById("ticker-" + tick.symbol);
  if (!row) return;
  row.querySelector("[data-price]").textContent = tick.price;
  const age = row.querySelector("[data-age]");
  if (age) { age.dataset.ts = tick.ts; showAge(age, Date.now()); }
  const points = JSON.parse(row.dataset.points || "[]");
  points.push([tick.ts, tick.price]);
  while (points.length > 300) points.shift();
  row.dataset.points = JSON.stringify(points);
  row.querySelector("polyline").setAttribute("points", sparkPoints(points, 120, 32));
}
// What the user did to notifications elsewhere (another tab, an email's link, the API):
// {"read": [ids]}, {"read_upto": id} (mark all read: every entry up to it), {"deleted":
// [ids]} or {"acked": {id, by, at}}. The page that did it swaps in what it asked for (an item
// whose request is still out is left to that swap), and its other copy, an item's toast or a
// toast's item, follows here.
function entryOf(nid) {
  const [ms, seq] = nid.split("-");
  return [BigInt(ms), BigInt(seq)];
}
function upTo(nid, last) {
  const [a, b] = [entryOf(nid), entryOf(last)];
  return a[0] < b[0] || (a[0] === b[0] && a[1] <= b[1]);
}
function settled(el) {
  return el && !el.querySelector(".htmx-request");
}
function markRead(el) {
  if (!settled(el) || !el.classList.contains("unread")) return;
  el.classList.replace("unread", "read");
  const button = el.querySelector('button[hx-post$="/read"]');
  if (!button) return;
  if (button === document.activeElement) {
    const other = el.querySelector('button[hx-post$="/delete"]');
    if (other) other.focus();
  }
  button.remove();
}
function markAcked(nid, by, at) {
  const item = document.getElementById("n-" + nid);
  const button = item && settled(item) && item.querySelector('button[hx-post$="/ack"]');
  if (button) {
    const note = document.createElement("p");
    note.className = "note-ack";
    const time = document.createElement("time");
    time.setAttribute("datetime", at);
    time.dataset.precision = "minute";
    time.textContent = at.slice(0, 16).replace("T", " ") + " UTC";
    note.append("Acknowledged by " + by + " at ", time);
    item.querySelector(".note-actions").before(note);
    localTimes(note);
    if (button === document.activeElement) button.nextElementSibling.focus();
    button.remove();
  }
  document.querySelectorAll("#toasts .toast[data-nid]").forEach((toast) => {
    const ack = toast.dataset.nid === nid && toast.querySelector('button[hx-post$="/ack"]');
    if (!ack || ack.classList.contains("htmx-request")) return;
    const done = document.createElement("div");
    done.className = "toast-ack";
    done.textContent = "Acknowledged by " + by;
    const focused = ack === document.activeElement;
    ack.replaceWith(done);
    if (focused) {  // the focus stays where it was, not thrown to the page's start
      done.tabIndex = -1;
      done.focus();
    }
  });
}
function onChanged(event) {
  let change;
  try { change = JSON.parse(event.data); } catch (_) { return; }
  (change.read || []).forEach((nid) => markRead(document.getElementById("n-" + nid)));
  if (typeof change.read_upto === "string") {
    document.querySelectorAll("li.note.unread[data-nid]").forEach((el) => {
      if (upTo(el.dataset.nid, change.read_upto)) markRead(el);
    });
  }
  (change.deleted || []).forEach((nid) => {
    const item = document.getElementById("n-" + nid);
    if (settled(item)) leave(item);
    document.querySelectorAll("#toasts .toast[data-nid]").forEach((toast) => {
      if (toast.dataset.nid === nid) toast.remove();
    });
  });
  if (change.acked) markAcked(change.acked.id, change.acked.by, change.acked.at);
}
// A feed back after a gap missed what changed meanwhile (its replay brings only what is new):
// the items shown are checked against the inbox's newest, read or gone as they are there.
const RESYNC_LIMIT = 100, ACKS_CHECKED = 20;
const ASKED = { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } };
async function resync() {
  const shown = [...document.querySelectorAll("li.note[data-nid]")];
  if (!shown.length) return;
  let items, whole;
  try {
    const answer = await fetch("/api/v1/notifications?limit=" + RESYNC_LIMIT, ASKED);
    if (!answer.ok) return;
    items = await answer.json();
    whole = !answer.headers.get("X-Next-Cursor");  // else what is older than the last is unknown
  } catch (_) { return; }
  const byId = new Map(items.map((n) => [n.id, n]));
  const oldest = items.length ? items[items.length - 1].id : null;
  shown.forEach((el) => {
    const found = byId.get(el.dataset.nid);
    if (found) {
      if (found.status === "read") markRead(el);
    } else if ((whole || (oldest && !upTo(el.dataset.nid, oldest))) && settled(el)) {
      leave(el);
    }
  });
  // those still asking to be acknowledged, the newest few, one at a time
  const pending = [...document.querySelectorAll('li.note button[hx-post$="/ack"]')];
  for (const button of pending.slice(0, ACKS_CHECKED)) {
    const nid = button.closest("li.note").dataset.nid;
    try {
      const answer = await fetch("/api/v1/notifications/" + encodeURIComponent(nid), ASKED);
      const insist = answer.ok ? (await answer.json()).insist : null;
      if (insist && insist.acknowledged_at) {
        markAcked(nid, insist.acknowledged_by || "someone", insist.acknowledged_at);
      }
    } catch (_) { return; }
  }
}
// Once its opening came (it ends with the unread count): a stream that Redis's absence
// answers with a retry alone opens too, every few seconds, and must not ask each time.
// Spread over a second: every tab of every user comes back at once after an outage.
let feedOpened = false, resyncDue = false, resyncing = false;
function onUnread() {
  if (!resyncDue || resyncing) return;
  resyncDue = false;
  resyncing = true;
  setTimeout(() => resync().finally(() => { resyncing = false; }), Math.random() * 1000);
}
document.addEventListener("htmx:sseOpen", (event) => {
  event.detail.source.addEventListener("tick", onTick);
  event.detail.source.addEventListener("changed", onChanged);
  event.detail.source.addEventListener("unread", onUnread);
  if (feedOpened) resyncDue = true;
  feedOpened = true;
});
