// The console's only script of its own (CSP: script-src 'self'): draws the diff with diff2html,
// keeps the layout the operator chose across live refreshes, lists the run's live events, and
// refreshes the run's body once more when an event came while a refresh was in flight.
// Every text from the server goes in as textContent: nothing here builds HTML from agent output.
(function () {
  "use strict";
  var LAYOUT_KEY = "intentd.diffLayout";
  var EVENT_TYPES = ["run.status", "step.started", "step.finished", "plan.compiled", "question.asked",
    "decision", "verdict", "sandbox.command", "run.reminder"];
  // The events the run's body refreshes on (its hx-trigger in _run_body.html).
  var BODY_EVENTS = ["run.status", "step.finished", "plan.compiled", "decision", "sandbox.command", "verdict"];
  // htmx sends one request per element and drops a trigger while one is in flight, and a body swapped
  // in replaces the element a queued one would have run on: an event that lands during a refresh
  // (a run that recompiles in 0.1 s after an answer) would wait for the 30 s poll. So after each
  // refresh of the body, one more when such an event came since that refresh was asked for.
  var bodyEventAt = 0;
  var bodyAskedAt = 0;

  function isBody(el) { return !!el && el.id === "run-body"; }

  function resyncIfStale() {
    var body = document.getElementById("run-body");
    if (body && bodyEventAt > bodyAskedAt && window.htmx) { window.htmx.trigger(body, "intentd-resync"); }
  }

  function layout() {
    try { return sessionStorage.getItem(LAYOUT_KEY) || "side-by-side"; } catch (e) { return "side-by-side"; }
  }

  function drawDiff() {
    var source = document.getElementById("diff-source");
    var target = document.getElementById("diff-view");
    if (!source || !target || typeof Diff2HtmlUI === "undefined") { return; }
    var chosen = layout();
    document.querySelectorAll("input[name=diff-layout]").forEach(function (radio) {
      radio.checked = radio.value === chosen;
      radio.onchange = function () {
        try { sessionStorage.setItem(LAYOUT_KEY, radio.value); } catch (e) { /* private mode */ }
        drawDiff();
      };
    });
    var ui = new Diff2HtmlUI(target, source.textContent, {
      outputFormat: chosen, drawFileList: true, matching: "lines", highlight: true,
      fileContentToggle: false, synchronisedScroll: true
    });
    ui.draw();
    ui.highlightCode();
    target.setAttribute("data-layout", chosen);
    source.hidden = true;  // the raw diff stays for a browser without script
  }

  function addEvent(list, type, data) {
    var item = document.createElement("li");
    var parsed = null;
    try { parsed = JSON.parse(data); } catch (e) { parsed = null; }
    var inner = parsed && parsed.data ? parsed.data : {};
    var parts = [];
    ["status", "step", "attempt", "act", "actor", "planHash", "decision", "exitCode", "index"].forEach(function (k) {
      if (inner[k] !== undefined && inner[k] !== null) {
        var v = String(inner[k]);
        parts.push(k + "=" + (k === "planHash" ? v.slice(0, 12) : v));
      }
    });
    var when = parsed && parsed.at ? parsed.at.replace("T", " ").slice(0, 19) : "";
    item.textContent = (parsed && parsed.seq ? "#" + parsed.seq + " " : "") + when + " " + type +
      (parts.length ? " (" + parts.join(", ") + ")" : "");
    item.className = "ev-" + type.replace(".", "-");
    list.appendChild(item);
  }

  document.addEventListener("htmx:sseOpen", function (evt) {
    var list = document.getElementById("live-events");
    var source = evt.detail && evt.detail.source;
    if (!list || !source || source.intentdListening) { return; }
    source.intentdListening = true;
    EVENT_TYPES.forEach(function (type) {
      source.addEventListener(type, function (e) { addEvent(list, type, e.data); });
    });
    BODY_EVENTS.forEach(function (type) {
      source.addEventListener(type, function () { bodyEventAt = performance.now(); });
    });
  });

  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (isBody(evt.detail && evt.detail.target)) { bodyAskedAt = performance.now(); }
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    // 204: nothing changed then, so no swap follows; a swap is checked once settled (below).
    if (isBody(evt.detail && evt.detail.target) && evt.detail.xhr && evt.detail.xhr.status === 204) { resyncIfStale(); }
  });

  document.addEventListener("DOMContentLoaded", drawDiff);
  document.addEventListener("htmx:afterSettle", function (evt) {
    if (evt.target && (evt.target.id === "run-body" || evt.target.querySelector && evt.target.querySelector("#diff-source"))) {
      drawDiff();
    }
    if (isBody(evt.target)) { resyncIfStale(); }
  });
})();
