/* Drop-in Connect client, served at /connect/client.js.

   The same data-hapi-* attributes and HumanConnect.on(...) / HumanConnect.open(...) API as the
   humanapi-connect-client npm package, with these differences, all for safety:
   - a message is accepted only when it comes from the Connect iframe itself (its window) and
     from the origin the iframe was opened on, so another frame or window can't forge events;
   - the base URL must be http(s), so a crafted attribute can't run script in the host page;
   - the page behind the dialog is made inert for keyboard and screen-reader users, and focus
     goes back to the button that opened Connect when it closes. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) { module.exports = factory(); } else { root.HumanConnect = factory(); }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var MODAL_WIDTH = 830;
  var MODAL_HEIGHT = 590;
  var EVENTS = { "connect-source": "connect", "disconnect-source": "disconnect", "close": "close" };
  var LEGACY_CALLBACKS = { connect: "onConnectSource", disconnect: "onDisconnectSource", close: "onClose" };

  var listeners = { connect: [], disconnect: [], close: [], error: [] };
  var session = null; // {frame, overlay, origin, options, opener, inert: [elements]}

  function report(error) { if (window.console) { console.error(error); } }

  function emit(name, payload) {
    (listeners[name] || []).slice().forEach(function (fn) {
      try { fn(payload); } catch (e) { report(e); }
    });
  }

  function on(name, fn) {
    if (typeof fn !== "function") {
      report('HumanConnect.on("' + name + '") needs a function, got ' + typeof fn);
      return;
    }
    (listeners[name] = listeners[name] || []).push(fn);
  }

  // Where this script was loaded from tells where Connect is, unless a base URL is given.
  var defaultBase = (function () {
    var current = document.currentScript;
    return current && current.src ? new URL(".", current.src).toString() : null;
  })();

  function connectURL(options) {
    var base = options.baseURL || defaultBase;
    if (!base) { throw new Error("Set data-hapi-base-url to the Connect page's URL"); }
    var url = new URL(base, window.location.href);
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new Error("The Connect base URL must be an http(s) URL");
    }
    url.searchParams.set("token", options.token);
    url.searchParams.set("mode", options.mode || "auth");
    ["segment", "pinnedProviders"].forEach(function (key) {
      if (options[key]) { url.searchParams.set(key, String(options[key])); }
    });
    return url;
  }

  function layout() {
    if (!session) { return; }
    var style = session.frame.style;
    var big = window.innerWidth >= MODAL_WIDTH && window.innerHeight >= MODAL_HEIGHT;
    style.width = "100%";
    style.height = "100%";
    style.maxWidth = big ? MODAL_WIDTH + "px" : "100%";
    style.maxHeight = big ? MODAL_HEIGHT + "px" : "100%";
    style.left = big ? "calc(50% - " + MODAL_WIDTH / 2 + "px)" : "0";
    style.top = big ? "calc(50% - " + MODAL_HEIGHT / 2 + "px)" : "0";
    style.borderRadius = big ? "8px" : "0";
  }

  function buildFrame(url) {
    var frame = document.createElement("iframe");
    frame.id = "human-api";
    frame.title = "Connect your health data";
    frame.src = url.toString();
    frame.tabIndex = -1;
    frame.setAttribute("role", "dialog");
    frame.setAttribute("aria-modal", "true");
    frame.setAttribute("referrerpolicy", "origin");
    var s = frame.style;
    s.position = "fixed";
    s.zIndex = "9999";
    s.margin = "0";
    s.padding = "0";
    s.border = "none";
    s.background = "#fff";
    s.boxShadow = "0 12px 48px rgba(0,0,0,.25)";
    return frame;
  }

  function buildOverlay(options) {
    var overlay = document.createElement("div");
    overlay.id = "human-api-connect-modal-overlay";
    var s = overlay.style;
    s.position = "fixed";
    s.top = "0";
    s.left = "0";
    s.width = "100%";
    s.height = "100%";
    s.zIndex = "9990"; // under the iframe (9999), above the page
    s.backgroundColor = "#333";
    s.opacity = String(options.overlayOpacity || "0.6");
    return overlay;
  }

  // Everything else on the page is made inert while Connect is open, so Tab can't wander
  // behind the dialog.
  function makeInert() {
    var changed = [];
    Array.prototype.forEach.call(document.body.children, function (el) {
      if (el === session.frame || el === session.overlay || el.tagName === "SCRIPT" || el.inert) { return; }
      el.inert = true;
      changed.push(el);
    });
    return changed;
  }

  function onMessage(event) {
    // The Connect iframe is the only trusted sender: same window and the origin it was opened on.
    if (!session || event.source !== session.frame.contentWindow || event.origin !== session.origin) { return; }
    var data = event.data;
    if (!data || typeof data !== "object" || typeof data.type !== "string") { return; }
    var name = EVENTS[data.type.replace(/^hapi-connect-/, "")];
    if (!name) { return; }
    var options = session.options;
    if (name === "close") { cleanup(); }
    emit(name, data);
    var legacy = options[LEGACY_CALLBACKS[name]];
    if (typeof legacy === "function") {
      try { legacy(data); } catch (e) { report(e); }
    }
  }

  function cleanup() {
    if (!session) { return; }
    var finished = session;
    session = null;
    window.removeEventListener("message", onMessage);
    window.removeEventListener("resize", layout);
    finished.inert.forEach(function (el) { el.inert = false; });
    if (finished.frame.parentNode) { finished.frame.parentNode.removeChild(finished.frame); }
    if (finished.overlay.parentNode) { finished.overlay.parentNode.removeChild(finished.overlay); }
    if (finished.opener && typeof finished.opener.focus === "function") { finished.opener.focus(); }
  }

  /* Open Connect. options: {token, baseURL, mode, segment, pinnedProviders, overlayOpacity}.
     Returns the iframe, or null when Connect is already open or the options are unusable (an
     "error" event says why). */
  function open(options) {
    options = options || {};
    if (session || document.getElementById("human-api")) { return null; }
    if (typeof options !== "object" || Array.isArray(options)) { emit("error", "Argument must be an object"); return null; }
    if (!options.token && !(options.mode === "select" && !options.preseed)) {
      emit("error", "The token attribute is required");
      return null;
    }
    var url;
    try { url = connectURL(options); } catch (e) { emit("error", e.message); return null; }
    var opener = document.activeElement;
    var frame = buildFrame(url);
    var overlay = buildOverlay(options);
    session = { frame: frame, overlay: overlay, origin: url.origin, options: options, opener: opener, inert: [] };
    layout();
    var body = document.body || document.documentElement;
    body.appendChild(frame);
    body.appendChild(overlay);
    session.inert = makeInert();
    frame.addEventListener("load", function () {
      if (session && session.frame === frame && frame.contentWindow) { frame.contentWindow.focus(); }
    });
    window.addEventListener("message", onMessage);
    window.addEventListener("resize", layout);
    return frame;
  }

  function flag(value) { return Boolean(value) && value !== "false"; }

  function bind(element) {
    if (element.__hapiBound) { return; }
    element.__hapiBound = true;
    element.addEventListener("click", function (event) {
      event.preventDefault();
      var data = element.dataset;
      open({
        token: data.hapiToken,
        baseURL: data.hapiBaseUrl,
        mode: data.hapiMode || "auth",
        preseed: flag(data.hapiPreseed),
        segment: data.hapiSegment,
        pinnedProviders: data.hapiPinnedProviders
      });
    });
  }

  function bindAll() {
    Array.prototype.forEach.call(document.querySelectorAll(".hapi__token-container [data-hapi-token]"), bind);
  }

  function mount() {
    if (!document.getElementsByClassName("hapi__token-container").length) {
      var message = "Couldn't find element with class hapi__token-container, event listener will not be bound";
      if (window.console) { console.warn(message); }
      emit("error", message);
      return;
    }
    bindAll();
    // Buttons rendered later (by a framework, after the token arrives) are bound too.
    if (typeof MutationObserver === "function") {
      new MutationObserver(bindAll).observe(document.body, { childList: true, subtree: true });
    }
  }

  // Like the npm client, bind on load, so listeners registered by the page's own scripts
  // hear a missing-container error.
  if (document.readyState === "complete") { setTimeout(mount, 0); } else { window.addEventListener("load", mount); }

  return { on: on, open: open };
});
