// cvit-bench submission server: the status page follows its submission without a reload.
// Same-origin fetch of the JSON status only; values are written with textContent, never as HTML.
"use strict";
(function () {
  var FINAL = { "published": true, "rejected": true, "withdrawn": true };
  var MAX_POLLS = 3600;                       // bounded: at most an hour of one-second polls
  function show(id, text) {
    var el = document.getElementById(id);
    if (!el) return;
    el.hidden = !text;
  }
  function start() {
    var state = document.getElementById("state");
    if (!state || !state.getAttribute("data-poll")) return;
    var url = state.getAttribute("data-poll");
    var polls = 0;
    function tick() {
      polls += 1;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (!s) return;
          state.textContent = s.state;
          state.setAttribute("data-state", s.state);
          var reason = document.getElementById("reason");
          if (reason) { reason.textContent = s.reason || ""; show("reason", s.reason); }
          var note = document.getElementById("note-text");
          if (note) { note.textContent = s.note || ""; show("note", s.note); }
          var link = document.getElementById("entry-link");
          if (link && s.entry_id) link.setAttribute("href", "/entries/" + encodeURIComponent(s.entry_id) + ".html");
          show("published-link", s.state === "published");
          if (FINAL[s.state]) return "stop";
        })
        .catch(function () { return null; })
        .then(function (stop) { if (stop !== "stop" && polls < MAX_POLLS) setTimeout(tick, 1000); });
    }
    setTimeout(tick, 500);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
