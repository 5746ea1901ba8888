// The "Enable push" button on the notification settings page: subscribe this browser with
// the server's VAPID key and store the subscription, or remove it again.
(() => {
  const on = document.getElementById("push-subscribe");
  const off = document.getElementById("push-unsubscribe");
  const status = document.getElementById("push-status");
  if (!on) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const say = (text) => { status.textContent = text; };

  function keyBytes(base64url) {
    const padded = (base64url + "===".slice((base64url.length + 3) % 4))
      .replace(/-/g, "+").replace(/_/g, "/");
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
    });
    if (!response.ok) throw new Error("the server answered " + response.status);
  }

  function refreshDevices() {
    if (window.htmx) htmx.ajax("GET", on.dataset.devices, { target: "#push-devices", swap: "outerHTML" });
  }

  async function registration() {
    return navigator.serviceWorker.register(on.dataset.sw);
  }

  async function show() {
    const reg = await navigator.serviceWorker.getRegistration(on.dataset.sw);
    const sub = reg && await reg.pushManager.getSubscription();
    on.hidden = Boolean(sub);
    off.hidden = !sub;
  }

  on.addEventListener("click", async () => {
    try {
      if (await Notification.requestPermission() !== "granted") { say("Notifications are blocked for this site."); return; }
      const reg = await registration();
      await navigator.serviceWorker.ready;
      const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(on.dataset.key) });
      await post(on.dataset.subscribe, sub.toJSON());
      say("Push is on for this browser.");
      refreshDevices();
      show();
    } catch (error) { say("Could not turn on push: " + error.message); }
  });

  off.addEventListener("click", async () => {
    try {
      const reg = await navigator.serviceWorker.getRegistration(on.dataset.sw);
      const sub = reg && await reg.pushManager.getSubscription();
      if (sub) { await post(on.dataset.unsubscribe, { endpoint: sub.endpoint }); await sub.unsubscribe(); }
      say("Push is off for this browser.");
      refreshDevices();
      show();
    } catch (error) { say("Could not turn off push: " + error.message); }
  });

  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    on.disabled = true;
    say("This browser does not support push notifications.");
  } else {
    show();
  }
})();
