// Tickerbell's service worker: shows Web Push notifications and opens the app on click.
self.addEventListener("push", (event) => {
  let data = {};
  try { data = event.data ? event.data.json() : {}; } catch (_) { data = { body: event.data.text() }; }
  const title = data.title || "Tickerbell";
  event.waitUntil(self.registration.showNotification(title, {
    body: data.body || "",
    tag: data.id ? "tb-" + data.id : undefined,
    icon: "/static/favicon.svg",
    requireInteraction: data.priority === "critical",
    data: { url: data.url || "/" },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = new URL(event.notification.data.url, self.location.origin).href;
  event.waitUntil(clients.matchAll({ type: "window" }).then((list) => {
    for (const client of list) {
      if (client.url === url && "focus" in client) return client.focus();
    }
    return clients.openWindow(url);
  }));
});
