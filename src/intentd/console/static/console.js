// The console's only script of its own (CSP: script-src 'self'): draws the diff with diff2html,
// keeps the layout the operator chose across live refreshes, and lists the run's live events.
// Every text from the server goes in as textContent: nothing here builds HTML from agent output.
(function () {
  "use strict";
  var LAYOUT_KEY = "intentd.diffLayout";
  var EVENT_TYPES = ["run.status", "step.started", "step.finished", "plan.compiled", "question.asked",
    "decision", "verdict", "sandbox.command", "run.reminder"];

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
  });

  document.addEventListener("DOMContentLoaded", drawDiff);
  document.addEventListener("htmx:afterSettle", function (evt) {
    if (evt.target && (evt.target.id === "run-body" || evt.target.querySelector && evt.target.querySelector("#diff-source"))) {
      drawDiff();
    }
  });
})();
