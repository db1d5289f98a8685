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

/* The pending list only lists open requests, so only the browser knows which ones just
   left it: after a poll, each row that is gone is announced once in #live-status, with
   the words its row carried (data-expired when its countdown had run out, data-gone
   otherwise). After the approver's own decision the flash speaks instead. */
(function () {
  "use strict";
  var before = null;

  function rows(list) {
    var found = {};
    if (!list) return found;
    list.querySelectorAll("tr[data-gone]").forEach(function (row) {
      var seconds = row.querySelector(".time-left [data-seconds-left]");
      var expired = seconds && (parseInt(seconds.textContent, 10) || 0) <= 1;
      found[row.id] = row.getAttribute(expired ? "data-expired" : "data-gone");
    });
    return found;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    var polled = event.detail.requestConfig && event.detail.requestConfig.verb === "get";
    before = target && target.id === "pending-rows" && polled ? rows(target) : null;
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (!before) return;
    var now = rows(document.getElementById("pending-rows"));
    var gone = Object.keys(before).filter(function (id) { return !(id in now); });
    var words = gone.map(function (id) { return before[id]; }).join(" ");
    before = null;
    var region = document.getElementById("live-status");
    if (words && region) region.textContent = words;
  });
})();

/* Session logs: a running session's duration ticks on from the seconds the server
   counted (every load starts again from the server's figure), and every UTC <time>
   shows the viewer's local time on hover. */
(function () {
  "use strict";
  var loaded = Date.now();

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function durationText(seconds) {  // as portal.domain.log_filters.duration_text
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return h + " h " + pad(m) + " min " + pad(s) + " s";
    if (m) return m + " min " + pad(s) + " s";
    return s + " s";
  }
  function tick() {
    var gone = Math.floor((Date.now() - loaded) / 1000);
    document.querySelectorAll("[data-elapsed-seconds]").forEach(function (el) {
      var base = parseInt(el.getAttribute("data-elapsed-seconds"), 10) || 0;
      var text = durationText(base + gone);
      if (el.textContent !== text) el.textContent = text;
    });
  }
  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.title) return;
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) el.title = at.toLocaleString() + " (your local time)";
    });
  }
  setInterval(tick, 500);
  document.addEventListener("DOMContentLoaded", function () { tick(); localTimes(); });
  document.addEventListener("htmx:afterSettle", localTimes);
})();
