// The console's only script: the live tail of attempts on the activity page, refreshed from
// /fragments/tail every few seconds. Every page works without it.
(function () {
  "use strict";
  var tail = document.getElementById("tail");
  if (!tail) { return; }
  var every = 3000;
  function refresh() {
    fetch("/fragments/tail", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { tail.innerHTML = html; tail.dataset.refreshed = String(Date.now()); })
      .catch(function () { /* keep the last tail; try again at the next tick */ })
      .finally(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
