/* The example page: log Connect's events, then ask this app's own server for the user's data.
   The page never sees the client secret or an access token; only the session token. */
(function () {
  "use strict";

  var log = document.getElementById("events");
  var polling = null;

  function note(name, payload) {
    if (log.textContent === "(none yet)") { log.textContent = ""; }
    log.textContent += name + " " + JSON.stringify(payload) + "\n";
  }

  function cell(value) {
    var td = document.createElement("td");
    td.textContent = value === undefined || value === null ? "" : String(value);
    return td;
  }

  function showSources(sources) {
    var list = document.getElementById("sources");
    list.textContent = "";
    if (!sources || !sources.length) {
      var none = document.createElement("li");
      none.textContent = sources === null ? "(this server has no /v1/human/sources)" : "None yet.";
      list.appendChild(none);
      return;
    }
    sources.forEach(function (s) {
      var item = document.createElement("li");
      var status = s.syncStatus ? " · " + s.syncStatus.status : "";
      item.textContent = (s.sourceName || s.source) + status;
      list.appendChild(item);
    });
  }

  function showActivities(activities) {
    var rows = document.getElementById("activities");
    rows.textContent = "";
    activities.forEach(function (a) {
      var tr = document.createElement("tr");
      [a.startTime, a.type, Math.round((a.duration || 0) / 60), ((a.distance || 0) / 1000).toFixed(2), a.steps, a.calories]
        .forEach(function (v) { tr.appendChild(cell(v)); });
      rows.appendChild(tr);
    });
  }

  function refresh() {
    return fetch("/api/data", { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
      var status = document.getElementById("activities-status");
      if (body.error) { status.textContent = body.error; return false; }
      showSources(body.sources);
      showActivities(body.activities);
      if (!body.connected) { status.textContent = "Nothing yet: connect a source."; return false; }
      status.textContent = body.activities.length ? body.activities.length + " latest activities" : "Syncing…";
      return body.activities.length > 0;
    });
  }

  // Connecting starts a sync on the server; poll for a little while until data shows up.
  function pollForData() {
    var tries = 0;
    if (polling) { clearInterval(polling); }
    polling = setInterval(function () {
      tries += 1;
      refresh().then(function (done) { if ((done || tries > 30) && polling) { clearInterval(polling); polling = null; } });
    }, 1500);
    refresh();
  }

  HumanConnect.on("connect", function (payload) { note("connect", payload); pollForData(); });
  HumanConnect.on("disconnect", function (payload) { note("disconnect", payload); refresh(); });
  HumanConnect.on("close", function (payload) { note("close", payload); refresh(); });
  HumanConnect.on("error", function (message) { note("error", message); });
  refresh();
})();
