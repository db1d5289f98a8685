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
