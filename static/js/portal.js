/* Session Gate: small progressive enhancements. Pages work without this file. */
(function () {
  "use strict";

  function flash(message, category) {
    var box = document.getElementById("flashes");
    if (!box) return;
    var div = document.createElement("div");
    div.className = "flash flash-" + (category || "error");
    div.textContent = message;
    box.replaceChildren(div);
  }

  document.addEventListener("htmx:sendError", function () {
    flash("Could not reach Session Gate. Check your connection and try again.");
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status >= 500) {
      flash("Something went wrong on our side. Please try again.");
    }
  });

  // After an htmx swap, move focus to the first field with an error so keyboard and
  // screen-reader users land on it.
  document.addEventListener("htmx:afterSettle", function () {
    var invalid = document.querySelector("main [aria-invalid=true]");
    if (invalid) invalid.focus();
  });
})();

/* Countdowns: the server renders the seconds left; between polls the browser ticks them
   down. The server stays the source of truth: every poll replaces the numbers. */
(function () {
  "use strict";
  var started = new WeakMap();

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-seconds-left]").forEach(function (el) {
      if (!started.has(el)) started.set(el, now);
      var total = parseInt(el.getAttribute("data-seconds-left"), 10) || 0;
      var left = Math.max(0, Math.ceil(total - (now - started.get(el)) / 1000));
      if (el.textContent !== String(left)) el.textContent = String(left);
    });
  }
  setInterval(tick, 250);
  document.addEventListener("DOMContentLoaded", tick);
})();
