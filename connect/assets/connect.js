/* The Connect page: lists sources, links and unlinks them, and tells the embedding app.
   Everything it shows comes from the JSON state the server rendered into the page; the page
   is served with a strict CSP, so nothing here builds HTML from strings. */
(function () {
  "use strict";

  var state = JSON.parse(document.getElementById("connect-state").textContent);
  var token = new URLSearchParams(window.location.search).get("token") || "";
  var session = { connected: [], disconnected: [] };
  var view = "list"; // list | form | oauth | problem
  var current = null; // the source whose form or sign-in is open
  var oauth = { popup: null, timer: null, slug: null };
  var REQUEST_TIMEOUT_MS = 30000;
  var SVG = "http://www.w3.org/2000/svg";
  var PALETTE = ["#2f6fde", "#0f8a6d", "#b4451f", "#7b4fd6", "#a3246b", "#2b7a9e", "#8a6d0f", "#4b5b6e"];

  function $(id) { return document.getElementById(id); }
  function show(id, visible) { $(id).hidden = !visible; }
  function pair(item) { return { name: item.name, id: item.id }; }
  function sourceBySlug(slug) { return state.sources.filter(function (s) { return s.slug === slug; })[0] || null; }
  function connectionFor(slug) {
    return (state.connections || []).filter(function (c) { return c.source === slug; })[0] || null;
  }

  // --- events to the embedding app -----------------------------------------------------------

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
      try { window.parent.postMessage(data, origin); } catch (e) { /* a malformed origin */ }
    });
  }

  // --- messages on screen --------------------------------------------------------------------

  function notice(text) {
    $("status-message").textContent = text || "";
    if (text) { $("error-message").textContent = ""; }
  }

  function pageError(text) {
    $("error-message").textContent = text || "";
    if (text) { $("status-message").textContent = ""; }
  }

  function formError(text, keys) {
    $("form-error").textContent = text || "";
    var inputs = $("form-fields").querySelectorAll("input");
    Array.prototype.forEach.call(inputs, function (input) {
      var bad = Boolean(text) && (!keys || keys.indexOf(input.name) !== -1);
      if (bad) { input.setAttribute("aria-invalid", "true"); } else { input.removeAttribute("aria-invalid"); }
    });
  }

  function friendlyTokenProblem(code) {
    if (code === "SESSION_TOKEN_EXPIRED") {
      return "Your session has expired. Close this window and open it again from the app.";
    }
    if (code === "MISSING_SESSION_TOKEN") { return "This page was opened without a session token."; }
    return "This link is not valid. Close this window and try again from the app.";
  }

  // --- logos: an original monogram per source, coloured by its slug -------------------------

  function colourFor(slug) {
    var hash = 0;
    for (var i = 0; i < slug.length; i += 1) { hash = (hash * 31 + slug.charCodeAt(i)) >>> 0; }
    return PALETTE[hash % PALETTE.length];
  }

  function logo(source, size) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 40 40");
    svg.setAttribute("width", String(size));
    svg.setAttribute("height", String(size));
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "logo");
    var box = document.createElementNS(SVG, "rect");
    box.setAttribute("width", "40");
    box.setAttribute("height", "40");
    box.setAttribute("rx", "11");
    box.setAttribute("fill", colourFor(source.slug));
    var text = document.createElementNS(SVG, "text");
    text.setAttribute("x", "20");
    text.setAttribute("y", "21");
    text.setAttribute("text-anchor", "middle");
    text.setAttribute("dominant-baseline", "central");
    text.setAttribute("class", "logo__text");
    text.textContent = (source.initials || source.name.charAt(0)).slice(0, 2);
    svg.appendChild(box);
    svg.appendChild(text);
    return svg;
  }

  // --- the list ------------------------------------------------------------------------------

  function statusLabel(connection) {
    return connection.status === "reauth_required" ? "Needs reconnecting" : "Connected";
  }

  function sourceItem(source) {
    var connection = connectionFor(source.slug);
    var item = document.createElement("li");
    item.className = "source-item" + (connection ? " source-item--" + connection.status : "");

    var button = document.createElement("button");
    button.type = "button";
    button.className = "source";
    button.setAttribute("data-slug", source.slug);
    var name = document.createElement("span");
    name.className = "source__name";
    name.textContent = source.name;
    button.appendChild(logo(source, 40));
    button.appendChild(name);
    button.addEventListener("click", function () { openSource(source); });
    item.appendChild(button);

    if (connection) {
      var status = document.createElement("span");
      status.id = "status-" + source.slug;
      status.className = "badge badge--" + connection.status;
      status.textContent = statusLabel(connection);
      button.setAttribute("aria-describedby", status.id);
      item.appendChild(status);
      var off = document.createElement("button");
      off.type = "button";
      off.className = "link danger";
      off.textContent = "Disconnect " + source.name;
      off.addEventListener("click", function () { disconnect(connection, off); });
      item.appendChild(off);
    } else {
      var chevron = document.createElement("span");
      chevron.className = "chevron";
      chevron.setAttribute("aria-hidden", "true");
      chevron.textContent = "›";
      item.appendChild(chevron);
    }
    return item;
  }

  function matches(source, query) {
    return !query || source.name.toLowerCase().indexOf(query) !== -1 || source.slug.indexOf(query) !== -1;
  }

  function renderList() {
    var list = $("source-list");
    list.textContent = "";
    var raw = $("source-search").value.trim();
    var query = raw.toLowerCase();
    var shown = state.sources.filter(function (s) { return matches(s, query); });
    shown.forEach(function (source) { list.appendChild(sourceItem(source)); });
    var empty = $("no-match");
    if (!state.sources.length) {
      empty.textContent = "No sources are available yet. Please contact the app's support.";
    } else {
      empty.textContent = "No source matches “" + raw + "”.";
    }
    empty.hidden = shown.length > 0;
  }

  function focusSource(slug) {
    var button = slug && $("source-list").querySelector('button.source[data-slug="' + slug + '"]');
    (button || $("source-search")).focus();
  }

  function showView(name) {
    view = name;
    show("source-list-view", name === "list");
    show("source-form-view", name === "form");
    show("oauth-view", name === "oauth");
    show("token-problem", name === "problem");
    show("foot", name === "list");
  }

  function backToList() {
    var slug = current && current.slug;
    current = null;
    stopWatchingPopup();
    showView("list");
    renderList();
    focusSource(slug);
  }

  // --- credential forms ----------------------------------------------------------------------

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
    if (input.required) { input.setAttribute("aria-required", "true"); }
    input.setAttribute("aria-describedby", "form-error");
    input.spellcheck = false;
    input.setAttribute("autocapitalize", "off");
    if (spec.kind === "url") { input.placeholder = "https://"; input.inputMode = "url"; }
    wrap.appendChild(label);
    wrap.appendChild(input);
    return wrap;
  }

  function openSource(source) {
    current = source;
    notice("");
    pageError("");
    if (source.authKind === "oauth2_code") {
      startOAuth(source);
      return;
    }
    var again = Boolean(connectionFor(source.slug));
    $("form-title").textContent = (again ? "Reconnect " : "Connect ") + source.name;
    $("form-logo").textContent = "";
    $("form-logo").appendChild(logo(source, 48));
    var fields = $("form-fields");
    fields.textContent = "";
    source.fields.forEach(function (spec) { fields.appendChild(field(spec)); });
    var hasPassword = source.fields.some(function (spec) { return spec.kind === "password"; });
    $("form-hint").hidden = !hasPassword;
    formError("");
    setBusy(false);
    showView("form");
    var first = fields.querySelector("input");
    (first || $("submit-button")).focus();
  }

  function setBusy(busy) {
    var button = $("submit-button");
    button.disabled = busy;
    button.classList.toggle("is-busy", busy);
    button.querySelector(".label").textContent = busy ? "Connecting…" : "Connect";
    $("source-form").setAttribute("aria-busy", busy ? "true" : "false");
  }

  function labelOf(input) {
    var label = $("source-form").querySelector('label[for="' + input.id + '"]');
    return label ? label.textContent : input.name;
  }

  function submitForm(event) {
    event.preventDefault();
    if (!current || $("submit-button").disabled) { return; }
    var inputs = Array.prototype.slice.call($("form-fields").querySelectorAll("input"));
    var missing = inputs.filter(function (el) { return el.required && !el.value.trim(); });
    if (missing.length) {
      formError("Please fill in " + missing.map(labelOf).join(", ") + ".", missing.map(function (el) { return el.name; }));
      missing[0].focus();
      return;
    }
    var body = {};
    inputs.forEach(function (el) { body[el.name] = el.value; });
    var source = current;
    formError("");
    setBusy(true);
    post("/connect/sources/" + encodeURIComponent(source.slug) + "/connect", body).then(function (result) {
      setBusy(false);
      if (result.ok) {
        connected(result.body.connection, result.body.currentConnections);
        return;
      }
      var text = problemText(result, "connect");
      if (text) {
        var keys = result.body.validation && result.body.validation.keys;
        formError(text, keys);
        var password = $("form-fields").querySelector('input[type="password"]');
        if (result.status === 400 && password) {
          // The usual mistake is the password: clear it and start there.
          password.value = "";
          password.focus();
        } else {
          focusFirstInvalid();
        }
      }
    }, function (failure) {
      setBusy(false);
      formError(networkText(failure));
      $("submit-button").focus();
    });
  }

  function focusFirstInvalid() {
    var bad = $("form-fields").querySelector('input[aria-invalid="true"]') || $("form-fields").querySelector("input");
    if (bad) { bad.focus(); }
  }

  // --- talking to the server -----------------------------------------------------------------

  function post(url, body) {
    var data = new URLSearchParams(body);
    data.set("token", token);
    data.set("csrf", state.csrf);
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, REQUEST_TIMEOUT_MS) : null;
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
      body: data.toString(),
      credentials: "omit",
      signal: controller ? controller.signal : undefined
    }).then(function (response) {
      clearTimeout(timer);
      return response.json().catch(function () { return {}; }).then(function (json) {
        return { ok: response.ok, status: response.status, body: json || {} };
      });
    }, function (error) {
      clearTimeout(timer);
      throw error;
    });
  }

  function networkText(failure) {
    if (failure && failure.name === "AbortError") {
      return "The server took too long to answer. Please try again.";
    }
    return "We couldn't reach the server. Check your internet connection and try again.";
  }

  /* The message to show for a failed request, or "" when the whole page changed state instead
     (an expired session can't be fixed by trying again). */
  function problemText(result, action) {
    var message = result.body && typeof result.body.message === "string" ? result.body.message : "";
    if (result.status === 401) {
      sessionEnded(message);
      return "";
    }
    if (result.status === 403) { return "This page is out of date. Close it and open Connect again from the app."; }
    if (result.status === 400 && message) { return message; }
    if (result.status === 404) {
      return action === "connect" ? "This source is no longer available." : "This connection was already removed.";
    }
    if (result.status === 429) { return message || "Too many attempts. Please wait a minute and try again."; }
    if (result.status === 502 || result.status === 504) {
      return "The service could not be reached right now. Please try again in a few minutes.";
    }
    return "Something went wrong on our side. Please try again in a moment.";
  }

  function sessionEnded(code) {
    stopWatchingPopup();
    current = null;
    state.csrf = "";
    $("problem-title").textContent = "Your session has ended";
    $("problem-text").textContent = friendlyTokenProblem(code || "SESSION_TOKEN_EXPIRED");
    notice("");
    pageError("");
    showView("problem");
    $("close-button").focus();
  }

  // --- connecting and disconnecting ----------------------------------------------------------

  function connected(connection, currentConnections) {
    if (Array.isArray(currentConnections)) { state.connections = currentConnections; }
    session.connected = session.connected.filter(function (c) { return c.id !== connection.id; });
    session.connected.push(pair(connection));
    session.disconnected = session.disconnected.filter(function (c) { return c.id !== connection.id; });
    tell("hapi-connect-connect-source", "CONNECTED_SOURCE");
    current = sourceBySlug(connection.source) || current;
    backToList();
    notice(connection.name + " is connected. Your data will arrive shortly.");
  }

  function disconnect(connection, button) {
    button.disabled = true;
    button.textContent = "Disconnecting…";
    notice("");
    pageError("");
    post("/connect/connections/" + encodeURIComponent(connection.id) + "/disconnect", {}).then(function (result) {
      if (!result.ok) {
        var text = problemText(result, "disconnect");
        if (text) {
          renderList();
          pageError(text);
          focusSource(connection.source);
        }
        return;
      }
      state.connections = result.body.currentConnections;
      session.disconnected.push(pair(result.body.connection));
      session.connected = session.connected.filter(function (c) { return c.id !== result.body.connection.id; });
      tell("hapi-connect-disconnect-source", "DISCONNECTED_SOURCE");
      renderList();
      notice(result.body.connection.name + " is disconnected.");
      focusSource(connection.source);
    }, function (failure) {
      renderList();
      pageError(networkText(failure));
      focusSource(connection.source);
    });
  }

  // --- OAuth sources: a popup, or the whole window when popups are blocked -------------------

  function oauthURL(source) {
    var query = new URLSearchParams({ token: token, csrf: state.csrf }).toString();
    return new URL("/connect/oauth/" + encodeURIComponent(source.slug) + "/start?" + query, window.location.href).href;
  }

  function popupFeatures() {
    var width = 520;
    var height = 720;
    var left = Math.max(0, Math.round((window.screen.width - width) / 2));
    var top = Math.max(0, Math.round((window.screen.height - height) / 2));
    return "popup=yes,width=" + width + ",height=" + height + ",left=" + left + ",top=" + top;
  }

  function startOAuth(source) {
    var url = oauthURL(source);
    var popup = null;
    try { popup = window.open(url, "hapi-oauth", popupFeatures()); } catch (e) { popup = null; }
    if (!popup || popup.closed) {
      redirectTop(source, url + "&redirect=1");
      return;
    }
    oauth.popup = popup;
    oauth.slug = source.slug;
    oauth.before = connectionFor(source.slug);
    $("oauth-title").textContent = "Connecting " + source.name;
    $("oauth-text").textContent = "Sign in to " + source.name + " in the window that opened and allow access.";
    $("oauth-logo").textContent = "";
    $("oauth-logo").appendChild(logo(source, 48));
    showView("oauth");
    $("oauth-focus").focus();
    stopTimer();
    oauth.timer = setInterval(function () {
      if (oauth.popup && oauth.popup.closed) { popupClosed(source); }
    }, 500);
  }

  function redirectTop(source, url) {
    notice("Your browser blocked the sign-in window. Taking you to " + source.name + "…");
    try {
      window.top.location.href = url;
    } catch (e) {
      window.location.href = url; // a sandboxed frame may not navigate the top window
    }
  }

  function stopTimer() {
    if (oauth.timer) { clearInterval(oauth.timer); }
    oauth.timer = null;
  }

  function stopWatchingPopup() {
    stopTimer();
    if (oauth.popup && !oauth.popup.closed) {
      try { oauth.popup.close(); } catch (e) { /* already gone */ }
    }
    oauth.popup = null;
    oauth.slug = null;
  }

  function popupClosed(source) {
    stopTimer();
    oauth.popup = null;
    oauth.slug = null;
    if (view !== "oauth") { return; }
    // A provider's page may sever window.opener, so the popup can finish without reporting
    // back: ask the server whether the connection was made before calling it a failure.
    var before = oauth.before;
    post("/connect/connections", {}).then(function (result) {
      if (view !== "oauth") { return; }
      var now = result.ok ? (result.body.currentConnections || []).filter(function (c) {
        return c.source === source.slug && c.status === "active";
      })[0] : null;
      if (now && (!before || before.status !== "active" || before.id !== now.id)) {
        connected({ id: now.id, name: now.name || source.name, source: source.slug }, result.body.currentConnections);
        return;
      }
      current = source;
      backToList();
      pageError("The sign-in window was closed before " + source.name + " was connected. Select it to try again.");
    }, function () {
      current = source;
      backToList();
      pageError("The sign-in window was closed before " + source.name + " was connected. Select it to try again.");
    });
  }

  function onOAuthResult(event) {
    // Only our own callback page, on our own origin, may report a sign-in result.
    if (event.origin !== window.location.origin || state.status) { return; }
    showOAuthResult(event.data);
  }

  function showOAuthResult(data) {
    if (!data || typeof data !== "object" || data.type !== "hapi-oauth-result") { return; }
    var source = sourceBySlug(String(data.slug || ""));
    if (!source) { return; }
    stopWatchingPopup();
    if (data.ok === true && data.connection && data.connection.id) {
      connected(
        { id: data.connection.id, name: data.connection.name || source.name, source: data.connection.source || source.slug },
        data.currentConnections
      );
      return;
    }
    current = source;
    backToList();
    pageError(typeof data.message === "string" && data.message ? data.message : source.name + " was not connected.");
  }

  // --- closing -------------------------------------------------------------------------------

  function close() {
    stopWatchingPopup();
    tell("hapi-connect-close", state.status || "SUCCESS");
    if (window.parent === window) { notice("You can close this window now."); }
  }

  function onKey(event) {
    if (event.key !== "Escape") { return; }
    var search = $("source-search");
    if (event.target === search && search.value) {
      search.value = "";
      renderList();
      return;
    }
    if (view === "form" || view === "oauth") {
      event.preventDefault();
      backToList();
      return;
    }
    close();
  }

  // --- start ---------------------------------------------------------------------------------

  $("close-button").addEventListener("click", close);
  document.addEventListener("keydown", onKey);
  show("loading", false);

  if (state.status) {
    $("problem-text").textContent = state.message || friendlyTokenProblem(state.status);
    showView("problem");
    $("close-button").focus();
    return;
  }
  window.addEventListener("message", onOAuthResult);
  $("source-search").addEventListener("input", renderList);
  $("back-button").addEventListener("click", backToList);
  $("source-form").addEventListener("submit", submitForm);
  $("oauth-cancel").addEventListener("click", backToList);
  $("oauth-focus").addEventListener("click", function () {
    if (oauth.popup && !oauth.popup.closed) { oauth.popup.focus(); } else if (current) { startOAuth(current); }
  });
  showView("list");
  renderList();
  if (state.oauthResult) {
    // Back from a sign-in done in this window (popups were blocked): show how it went, once.
    var url = new URL(window.location.href);
    url.searchParams.delete("oauth_result");
    window.history.replaceState(null, "", url.pathname + url.search);
    showOAuthResult(state.oauthResult);
  }
})();
