// Tickerbell's own script: small page behaviours htmx does not cover (the live feed is
// static/js/live.js).

// A 422 answer to an htmx request carries the form (or list) again with its errors beside
// the fields: swap it in like a success, rather than treating it as a failure.
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.xhr.status === 422) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// The alert form shows the chosen condition's own fields only ([data-kinds]); the others are
// disabled, so they stay out of the request. Without JavaScript every field shows.
function showKindFields(select) {
  select.form.querySelectorAll("[data-kinds]").forEach((field) => {
    const on = field.dataset.kinds.split(" ").includes(select.value);
    field.style.display = on ? "" : "none";  // `hidden` would lose to .row .field's flex
    field.querySelectorAll("input, select, textarea").forEach((el) => {
      el.disabled = !on;
      el.required = on;
    });
  });
}
document.addEventListener("change", (event) => {
  if (event.target.matches("[data-kind-select]")) showKindFields(event.target);
});
function kindForms(root) {
  if (root.querySelectorAll) root.querySelectorAll("[data-kind-select]").forEach(showKindFields);
}
document.addEventListener("DOMContentLoaded", () => kindForms(document));
document.addEventListener("htmx:load", (event) => kindForms(event.detail.elt));

// A setting's status line, replaced by its save's answer: its field says whether it is in
// error (aria-invalid, and the wrapper's has-error), as the page did when it was drawn.
// The line may come inside a larger swap (the strategies' list and its Follow error).
document.addEventListener("htmx:load", (event) => {
  const elt = event.detail.elt;
  if (!elt.matches) return;
  const lines = elt.matches(".field-status[id]") ? [elt] : elt.querySelectorAll(".field-status[id]");
  lines.forEach((line) => {
    const error = line.classList.contains("error");
    document.querySelectorAll(`[aria-describedby~="${line.id}"]`).forEach((input) => {
      if (error) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
      const wrapper = input.closest(".field");
      if (wrapper) wrapper.classList.toggle("has-error", error);
    });
  });
});

// A form answered with its errors (422, swapped in place of the one sent): focus goes to the
// first field in error, not to the page's start with the button that was pressed.
document.addEventListener("htmx:afterSettle", (event) => {
  if (!event.detail.xhr || event.detail.xhr.status !== 422) return;
  const invalid = event.target.querySelector && event.target.querySelector('[aria-invalid="true"]');
  if (invalid && !event.target.contains(document.activeElement)) invalid.focus();
});

// A button that replaces its own item (mark read, acknowledge, pause, delete, load more...)
// takes the focus away with it, to the page's start. It comes back to the first action of
// what took the item's place, or, the item gone, of the next item (the one before, at the
// list's end), so a keyboard user goes on where they were. Kept per request, and looked at
// once its swap has settled, whether or not anything was swapped in.
const ACTIONS = "button:not([disabled]), a[href], input:not([disabled]):not([type=hidden]), select";
const focusWas = new WeakMap();  // request -> where the focus was
document.addEventListener("htmx:beforeSwap", (event) => {
  const target = event.detail.target;
  if (!target || target === document.body || !target.contains(document.activeElement)) return;
  // a panel's own refresh (the operations page's, every 10 s) moved nothing: htmx keeps the
  // focus on the same element by its id, and another job's Retry must never take it
  if (event.detail.elt && /\bevery\b/.test(event.detail.elt.getAttribute("hx-trigger") || "")) {
    return;
  }
  const active = document.activeElement;
  focusWas.set(event.detail.xhr, {parent: target.parentElement, target,
    previous: target.previousElementSibling, next: target.nextElementSibling,
    label: active.getAttribute("aria-label")});
});
// A whole panel swapped for one of its buttons (a destination's Send test): the same button
// in the new panel, found by its name; it gone (Delete), the panel's news, if it has some.
function sameOrNews(panel, label) {
  const same = label && [...panel.querySelectorAll("[aria-label]")]
    .find((el) => el.getAttribute("aria-label") === label);
  if (same) return same;
  const news = panel.querySelector("[role=status].flash, [role=status] .flash");
  if (news) news.tabIndex = -1;
  return news;
}
document.addEventListener("htmx:afterRequest", (event) => {
  const was = focusWas.get(event.detail.xhr);
  if (!was) return;
  focusWas.delete(event.detail.xhr);
  setTimeout(() => {
    if (document.activeElement && document.activeElement !== document.body) return;
    const inPlace = was.target.isConnected ? was.target
      : was.previous && was.previous.isConnected ? was.previous.nextElementSibling
      : was.parent && was.parent.firstElementChild;
    const kept = inPlace && inPlace.isConnected && inPlace.querySelector("[role=status]")
      && sameOrNews(inPlace, was.label);
    if (kept) return kept.focus();
    for (const item of [inPlace, was.next, was.previous]) {
      const action = item && item.isConnected && item.querySelector(ACTIONS);
      if (action) return action.focus();
    }
    if (inPlace && inPlace.isConnected) {  // no action near (a toast's "Acknowledged by")
      inPlace.tabIndex = -1;
      inPlace.focus();
    }
  }, htmx.config.defaultSettleDelay + 1);
});

// Mark all read answers the list again: as long as the page had it, "Load more"s included.
document.addEventListener("htmx:configRequest", (event) => {
  if (event.detail.elt.id === "read-all") {
    event.detail.parameters.shown = document.querySelectorAll("#notes li.note").length;
  }
});

// A form that adds to a list (a strategy followed) is emptied once the list has it.
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form instanceof HTMLFormElement && form.hasAttribute("data-reset-when-done")
      && event.detail.xhr.status < 300) form.reset();  // a refusal (422) is shown, kept
});

// The phone menu: a real button, so keyboards and screen readers reach it.
document.addEventListener("click", (event) => {
  const burger = event.target.closest(".nav-burger");
  if (!burger) return;
  const open = burger.closest(".nav").classList.toggle("open");
  burger.setAttribute("aria-expanded", String(open));
});
// An item gone from the page (deleted here, elsewhere, or found gone): a button of it that
// had the focus hands it on, as the page's own Delete does.
function leave(el) {
  if (el.contains(document.activeElement)) {
    const next = el.nextElementSibling || el.previousElementSibling;
    const button = next && next.querySelector("button");
    if (button) button.focus();
  }
  el.remove();
}
document.addEventListener("htmx:responseError", (event) => {
  const xhr = event.detail.xhr, elt = event.detail.elt;
  // a box saved as it is ticked (settings) shows again what is saved: nothing changed
  if (elt instanceof HTMLInputElement && elt.type === "checkbox") elt.checked = !elt.checked;
  let message = "Something went wrong (" + xhr.status + ").";
  try { message = JSON.parse(xhr.responseText).detail || message; } catch (_) { /* not JSON */ }
  const item = elt instanceof Element && elt.closest("li.note[data-nid], tr[data-alert-id]");
  if (xhr.status === 404 && item) {
    // deleted meanwhile (another tab whose news this page missed, the API): shown gone; a
    // Delete has then done what was asked, anything else says why the item went
    leave(item);
    if (/\/delete$/.test(event.detail.pathInfo.requestPath)) return;
    message = "That " + (item.matches("tr") ? "alert" : "notification")
      + " was deleted meanwhile, perhaps in another tab.";
  }
  const banner = document.getElementById("status-banner");
  if (banner && (elt === banner || event.detail.target === banner)) {
    // The banner's own poll failing is the news: said once, in the banner, until a poll
    // answers again (its swap replaces this), not a new error box every 15 s.
    const p = document.createElement("p");
    p.className = "banner banner-warning";
    p.textContent = xhr.status === 503
      ? "Tickerbell cannot reach its data store right now. The live feed reconnects by "
        + "itself, and what you missed is replayed."
      : message;
    // the same words again are no news: a live region would read them out every 15 s
    if (banner.textContent !== p.textContent) banner.replaceChildren(p);
    return;
  }
  const box = document.getElementById("flashes");
  if (!box) return;
  const div = document.createElement("div");
  div.className = "flash flash-error";
  div.setAttribute("role", "alert");
  div.textContent = message;
  // the same words again replace the earlier copy: said anew, not piled up
  box.querySelectorAll(".flash-error").forEach((old) => {
    if (old.textContent === message) old.remove();
  });
  box.prepend(div);
});

// The age of every price on the page, so a quiet or disconnected feed never looks live.
const STALE_MS = 60000;
function showAge(el, now) {
  const ts = Number(el.dataset.ts);
  if (!ts) return;
  const s = Math.max(0, Math.floor((now - ts) / 1000));
  el.textContent = s >= 86400 ? Math.floor(s / 86400) + " d ago"
    : s >= 3600 ? Math.floor(s / 3600) + " h ago"
    : s >= 60 ? Math.floor(s / 60) + " min ago" : s + " s ago";
  el.classList.toggle("stale", now - ts > STALE_MS);
}
setInterval(() => {
  const now = Date.now();
  document.querySelectorAll("[data-age]").forEach((el) => showAge(el, now));
}, 5000);

// Times: the server writes UTC; each <time datetime> is shown in the user's chosen zone.
const zoneMeta = document.querySelector('meta[name="tz"]');
let timeFormat = null;
try {
  timeFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: zoneMeta ? zoneMeta.content : "UTC", year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    timeZoneName: "short" });
} catch (_) { /* an unknown zone: keep the server's UTC text */ }
function localTimes(root) {
  if (!timeFormat || !root.querySelectorAll) return;
  root.querySelectorAll("time[datetime]").forEach((el) => {
    const when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) return;
    const p = Object.fromEntries(timeFormat.formatToParts(when).map((x) => [x.type, x.value]));
    const seconds = el.dataset.precision === "minute" ? "" : ":" + p.second;
    el.textContent = `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}${seconds} ${p.timeZoneName}`;
  });
}
document.addEventListener("DOMContentLoaded", () => localTimes(document));
document.addEventListener("htmx:load", (event) => localTimes(event.detail.elt));
