/* The demo client page: log Connect's events, then show what the server-side exchange read. */
(function () {
  "use strict";
  var log = document.getElementById("events");
  function note(name, payload) {
    if (log.textContent === "(none yet)") { log.textContent = ""; }
    log.textContent += name + " " + JSON.stringify(payload) + "\n";
  }
  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }
  function refresh(attempt) {
    fetch("/demo/data", { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
      document.getElementById("total").textContent = body.connected ? "(" + body.total + " in all)" : "";
      if (body.connected && body.total === 0 && attempt < 30) { setTimeout(function () { refresh(attempt + 1); }, 1000); }
      if (!body.activities.length) { return; }
      var rows = document.getElementById("rows");
      rows.textContent = "";
      body.activities.forEach(function (a) {
        var tr = document.createElement("tr");
        [a.startTime, a.type, Math.round(a.duration / 60), (a.distance / 1000).toFixed(2), a.steps, a.calories]
          .forEach(function (v) { tr.appendChild(cell(v)); });
        rows.appendChild(tr);
      });
    });
  }
  HumanConnect.on("connect", function (p) { note("connect", p); refresh(0); });
  HumanConnect.on("disconnect", function (p) { note("disconnect", p); });
  HumanConnect.on("close", function (p) { note("close", p); refresh(0); });
  refresh(0);
})();
