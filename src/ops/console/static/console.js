// The console's only script: the live tail of attempts on the activity page, refreshed from
// /fragments/tail every few seconds, and a target file chosen in the import form read into its
// text box. Every page works without it.
(function () {
  "use strict";
  var file = document.getElementById("import-file");
  var links = document.getElementById("import-links");
  if (file && links) {
    file.addEventListener("change", function () {
      if (!file.files || !file.files[0]) { return; }
      file.files[0].text().then(function (t) { links.value = t; });
    });
  }
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
