/* The Connect page: lists sources, links and unlinks them, and tells the embedding app. */
(function () {
  "use strict";

  var state = JSON.parse(document.getElementById("connect-state").textContent);
  var params = new URLSearchParams(window.location.search);
  var token = params.get("token") || "";
  var session = { connected: [], disconnected: [] };
  var current = null; // the source whose form is open

  function $(id) { return document.getElementById(id); }

  function pair(item) { return { name: item.name, id: item.id }; }

  function payload(type, status) {
    var ok = !state.status;
    return {
      type: type,
      status: status,
      sessionResults: {
        connectedSources: ok ? session.connected.slice() : [],
        disconnectedSources: ok ? session.disconnected.slice() : [],
        requestedSources: []
      },
      currentConnections: ok ? (state.connections || []).map(pair) : [],
      requestedProviders: []
    };
  }

  // Only the Application's registered origins may receive events: the browser drops a message
  // whose targetOrigin doesn't match the parent, so posting to each allowed origin is safe.
  function tell(type, status) {
    if (window.parent === window) { return; }
    var data = payload(type, status);
    if (state.status) {
      window.parent.postMessage(data, "*"); // no one's data: only a status and empty lists
      return;
    }
    (state.origins || []).forEach(function (origin) {
      try { window.parent.postMessage(data, origin); } catch (e) { /* malformed origin */ }
    });
  }

  function show(id, visible) { $(id).hidden = !visible; }

  function notice(text, kind) {
    var box = $("status-message");
    box.textContent = text || "";
    box.className = "notice" + (kind ? " notice--" + kind : "");
    box.hidden = !text;
  }

  function connectionFor(slug) {
    return (state.connections || []).filter(function (c) { return c.source === slug; })[0] || null;
  }

  function renderList() {
    var list = $("source-list");
    list.textContent = "";
    var query = $("source-search").value.trim().toLowerCase();
    var shown = 0;
    state.sources.forEach(function (source) {
      if (query && source.name.toLowerCase().indexOf(query) === -1 && source.slug.indexOf(query) === -1) { return; }
      shown += 1;
      var connection = connectionFor(source.slug);
      var item = document.createElement("li");
      item.className = "source-item";

      var button = document.createElement("button");
      button.type = "button";
      button.className = "source";
      var badge = document.createElement("span");
      badge.className = "source__logo";
      badge.setAttribute("aria-hidden", "true");
      badge.textContent = source.initials;
      var label = document.createElement("span");
      label.className = "source__name";
      label.textContent = source.name;
      button.appendChild(badge);
      button.appendChild(label);
      button.addEventListener("click", function () { openSource(source); });
      item.appendChild(button);

      if (connection) {
        var status = document.createElement("span");
        status.className = "source__status source__status--" + connection.status;
        status.textContent = connection.status === "reauth_required" ? "Needs reconnecting" : "Connected";
        item.appendChild(status);
        var off = document.createElement("button");
        off.type = "button";
        off.className = "link danger";
        off.textContent = "Disconnect " + source.name;
        off.addEventListener("click", function () { disconnect(connection, off); });
        item.appendChild(off);
      }
      list.appendChild(item);
    });
    show("no-match", shown === 0);
  }

  function field(spec) {
    var wrap = document.createElement("div");
    wrap.className = "field";
    var id = "field-" + spec.name;
    var label = document.createElement("label");
    label.setAttribute("for", id);
    label.textContent = spec.label;
    var input = document.createElement("input");
    input.id = id;
    input.name = spec.name;
    input.type = spec.kind === "password" ? "password" : (spec.kind === "url" ? "url" : "text");
    input.autocomplete = spec.autocomplete || "off";
    input.required = spec.required !== false;
    input.spellcheck = false;
    input.autocapitalize = "off";
    wrap.appendChild(label);
    wrap.appendChild(input);
    return wrap;
  }

  function openSource(source) {
    current = source;
    notice("");
    if (source.authKind === "oauth2_code") {
      startOAuth(source);
      return;
    }
    $("form-title").textContent = "Connect " + source.name;
    var fields = $("form-fields");
    fields.textContent = "";
    source.fields.forEach(function (spec) { fields.appendChild(field(spec)); });
    $("form-error").hidden = true;
    show("source-list-view", false);
    show("source-form-view", true);
    var first = fields.querySelector("input");
    if (first) { first.focus(); }
  }

  function backToList() {
    current = null;
    show("source-form-view", false);
    show("source-list-view", true);
    renderList();
  }

  function post(url, body) {
    var data = new URLSearchParams(body);
    data.set("token", token);
    data.set("csrf", state.csrf);
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
      body: data.toString(),
      credentials: "omit"
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        return { ok: response.ok, status: response.status, body: json };
      });
    });
  }

  function connected(result) {
    state.connections = result.body.currentConnections;
    session.connected.push(pair(result.body.connection));
    session.disconnected = session.disconnected.filter(function (c) { return c.id !== result.body.connection.id; });
    tell("hapi-connect-connect-source", "CONNECTED_SOURCE");
    backToList();
    notice(result.body.connection.name + " is connected. Your data will arrive shortly.", "success");
  }

  function submitForm(event) {
    event.preventDefault();
    if (!current) { return; }
    var form = $("source-form");
    var missing = Array.prototype.filter.call(form.elements, function (el) { return el.required && !el.value; });
    if (missing.length) {
      formError("Please fill in " + missing.map(function (el) { return form.querySelector("label[for=" + el.id + "]").textContent; }).join(", ") + ".");
      missing[0].focus();
      return;
    }
    var body = {};
    Array.prototype.forEach.call(form.elements, function (el) { if (el.name) { body[el.name] = el.value; } });
    var button = $("submit-button");
    button.disabled = true;
    button.textContent = "Connecting…";
    post("/connect/sources/" + encodeURIComponent(current.slug) + "/connect", body).then(function (result) {
      if (result.ok) {
        connected(result);
      } else {
        formError(result.body.message || "Could not connect. Please try again.");
      }
    }, function () {
      formError("The server could not be reached. Check your connection and try again.");
    }).then(function () {
      button.disabled = false;
      button.textContent = "Connect";
    });
  }

  function formError(text) {
    var box = $("form-error");
    box.textContent = text;
    box.hidden = false;
  }

  function disconnect(connection, button) {
    button.disabled = true;
    post("/connect/connections/" + encodeURIComponent(connection.id) + "/disconnect", {}).then(function (result) {
      if (!result.ok) {
        button.disabled = false;
        notice(result.body.message || "Could not disconnect. Please try again.", "error");
        return;
      }
      state.connections = result.body.currentConnections;
      session.disconnected.push(pair(result.body.connection));
      session.connected = session.connected.filter(function (c) { return c.id !== result.body.connection.id; });
      tell("hapi-connect-disconnect-source", "DISCONNECTED_SOURCE");
      renderList();
      notice(result.body.connection.name + " is disconnected.", "success");
    }, function () {
      button.disabled = false;
      notice("The server could not be reached. Check your connection and try again.", "error");
    });
  }

  function startOAuth(source) {
    var url = "/connect/oauth/" + encodeURIComponent(source.slug) + "/start?" +
      new URLSearchParams({ token: token, csrf: state.csrf }).toString();
    var popup = window.open(url, "hapi-oauth", "width=520,height=720");
    if (!popup) {
      window.top.location.href = url + "&redirect=1";
    }
  }

  function close() {
    tell("hapi-connect-close", state.status || "SUCCESS");
    if (window.parent === window) { notice("You can close this window now.", "success"); }
  }

  $("close-button").addEventListener("click", close);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      if (current) { backToList(); } else { close(); }
    }
  });

  if (state.status) {
    notice(state.message, "error");
    return;
  }
  $("source-search").addEventListener("input", renderList);
  $("back-button").addEventListener("click", backToList);
  $("source-form").addEventListener("submit", submitForm);
  show("source-list-view", true);
  renderList();
})();
