/* The OAuth result page: hands the result to the Connect page that opened this popup, then closes.
   The Connect page is served by this same server, so the message goes to this origin only. */
(function () {
  "use strict";

  var result = JSON.parse(document.getElementById("oauth-result").textContent);

  document.getElementById("close-window").addEventListener("click", function () { window.close(); });

  var opener = null;
  try { opener = window.opener && !window.opener.closed ? window.opener : null; } catch (e) { opener = null; }
  if (!opener) { return; } // opened without a popup: the page itself shows the result
  // A result for no known source (a broken or replayed link) stays on screen to be read.
  if (!result.ok && !result.slug) { return; }
  try {
    opener.postMessage(result, window.location.origin);
  } catch (e) {
    return; // keep the page open, it says what happened
  }
  window.close();
})();
