// Live updates for the runs page: cleanroom console's own script (no third-party code).
// Each run event the owner may see (relayed by the console from cleanroomd) triggers a fresh
// render of the page's live region (chart, budgets, runs table) by the console itself.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region || !window.EventSource) return;
  var status = document.getElementById("live");
  // One request at a time; an event during a request asks for one more render after it, so
  // the last change is never lost.
  var pending = false, again = false;
  function refresh() {
    if (pending) { again = true; return; }
    pending = true;
    again = false;
    fetch(region.getAttribute("data-live"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var before = {};
        region.querySelectorAll("tbody tr").forEach(function (tr) { before[tr.id] = tr.textContent; });
        region.innerHTML = html;
        region.querySelectorAll("tbody tr").forEach(function (tr) {
          if (before[tr.id] !== tr.textContent) tr.classList.add("fresh");
        });
      })
      .catch(function () { if (status) status.textContent = "Live updates paused: reload the page."; })
      .finally(function () { pending = false; if (again) refresh(); });
  }
  var events = new EventSource("/events");
  events.onopen = function () { if (status) status.textContent = "Live: connected; new runs and changes appear as they happen."; };
  events.onmessage = function (e) {
    try {
      var entry = JSON.parse(e.data);
      if (String(entry.action || "").indexOf("run.") === 0) refresh();
    } catch (_) { /* not an entry */ }
  };
  events.onerror = function () { if (status) status.textContent = "Live: reconnecting…"; };
})();
