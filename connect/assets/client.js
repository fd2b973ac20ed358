/* Drop-in Connect client: the same data-hapi-* attributes and HumanConnect.on(...) API as
   humanapi-connect-client, plus an origin check on every message it accepts. */
(function (root, factory) {
  if (typeof module === "object" && module.exports) { module.exports = factory(); } else { root.HumanConnect = factory(); }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var listeners = { connect: [], disconnect: [], close: [], error: [] };
  var frame = null;
  var overlay = null;
  var frameOrigin = null;

  function emit(name, payload) {
    (listeners[name] || []).forEach(function (fn) {
      try { fn(payload); } catch (e) { if (window.console) { console.error(e); } }
    });
  }

  function on(name, fn) {
    if (typeof fn !== "function") { if (window.console) { console.error("HumanConnect.on needs a function"); } return; }
    (listeners[name] = listeners[name] || []).push(fn);
  }

  function scriptBase() {
    var current = document.currentScript;
    return current && current.src ? new URL(".", current.src).toString() : window.location.origin + "/connect/";
  }
  var defaultBase = scriptBase();

  function cleanup() {
    window.removeEventListener("message", onMessage);
    window.removeEventListener("resize", layout);
    if (frame) { frame.remove(); }
    if (overlay) { overlay.remove(); }
    frame = overlay = frameOrigin = null;
  }

  function layout() {
    if (!frame) { return; }
    var big = window.innerWidth >= 830 && window.innerHeight >= 590;
    frame.style.maxWidth = big ? "830px" : "100%";
    frame.style.maxHeight = big ? "590px" : "100%";
    frame.style.left = big ? "calc(50% - 415px)" : "0";
    frame.style.top = big ? "calc(50% - 295px)" : "0";
    frame.style.borderRadius = big ? "8px" : "0";
  }

  function onMessage(event) {
    if (!frame || event.origin !== frameOrigin || event.source !== frame.contentWindow) { return; }
    var data = event.data;
    if (!data || typeof data !== "object" || typeof data.type !== "string") { return; }
    var kind = data.type.replace("hapi-connect-", "");
    if (kind === "connect-source") { emit("connect", data); }
    else if (kind === "disconnect-source") { emit("disconnect", data); }
    else if (kind === "close") { cleanup(); emit("close", data); }
  }

  function open(options) {
    options = options || {};
    if (frame || document.getElementById("human-api")) { return null; }
    if (!options.token) { emit("error", "The token attribute is required"); return null; }
    var url = new URL(options.baseURL || defaultBase, window.location.href);
    url.searchParams.set("token", options.token);
    url.searchParams.set("mode", options.mode || "auth");
    frameOrigin = url.origin;

    overlay = document.createElement("div");
    overlay.id = "human-api-connect-modal-overlay";
    overlay.style.cssText = "position:fixed;inset:0;width:100%;height:100%;z-index:9990;background:#333;opacity:0.6";
    frame = document.createElement("iframe");
    frame.id = "human-api";
    frame.title = "Connect your health data";
    frame.src = url.toString();
    frame.tabIndex = -1;
    frame.style.cssText = "position:fixed;z-index:9999;margin:0;padding:0;border:none;width:100%;height:100%;background:#fff";
    layout();
    document.body.appendChild(frame);
    document.body.appendChild(overlay);
    frame.addEventListener("load", function () { if (frame) { frame.contentWindow.focus(); } });
    window.addEventListener("message", onMessage);
    window.addEventListener("resize", layout);
    return frame;
  }

  function bind(button) {
    if (button.__hapiBound) { return; }
    button.__hapiBound = true;
    button.addEventListener("click", function (event) {
      event.preventDefault();
      open({ token: button.getAttribute("data-hapi-token"), baseURL: button.getAttribute("data-hapi-base-url"),
             mode: button.getAttribute("data-hapi-mode") || "auth" });
    });
  }

  function mount() {
    var containers = document.getElementsByClassName("hapi__token-container");
    if (!containers.length) { emit("error", "Couldn't find element with class hapi__token-container"); return; }
    Array.prototype.forEach.call(containers, function (container) {
      Array.prototype.forEach.call(container.querySelectorAll("[data-hapi-token]"), bind);
    });
    // Buttons added later are bound too.
    new MutationObserver(function () {
      Array.prototype.forEach.call(document.querySelectorAll(".hapi__token-container [data-hapi-token]"), bind);
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", mount); } else { mount(); }

  return { on: on, open: open };
});
