// Tickerbell's own script: small page behaviours htmx does not cover.
document.addEventListener("htmx:responseError", (event) => {
  const xhr = event.detail.xhr;
  let message = "Something went wrong (" + xhr.status + ").";
  try { message = JSON.parse(xhr.responseText).detail || message; } catch (_) { /* not JSON */ }
  const box = document.getElementById("flashes");
  if (!box) return;
  const div = document.createElement("div");
  div.className = "flash flash-error";
  div.setAttribute("role", "alert");
  div.textContent = message;
  box.prepend(div);
});
