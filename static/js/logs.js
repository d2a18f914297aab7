// The prediction page's log viewer and its folds (copy buttons: copy.js). Without this script
// the page still works: the log shows as rendered, and the snippets can be selected by hand.
//
// Following the tail: after every swap the log box scrolls to its end, unless the reader has
// scrolled up; then a "Jump to latest" button shows instead. The box may be replaced whole
// (a reset of the viewer), so it is looked up each time and its scroll events are caught on
// the document.
//
// The freshness line (#log-freshness) comes as clock times ("Checked at 10:00:01 · next check
// at about 10:00:21"), which change only when the provider is polled; here they read as "40 s
// ago" and "in about 20 s", and tick every second.
(function () {
  "use strict";
  var SLACK = 24; // pixels from the end that still count as "at the end"
  // Seconds past its time that a check still reads as under way: the provider may take a
  // while to answer, and the viewer hears of the answer up to a second later.
  var CHECKING = 15;
  var following = true;

  function box() {
    return document.querySelector("[data-log-scroll]");
  }

  function jumpButton() {
    return document.querySelector("[data-log-jump]");
  }

  function atEnd(elt) {
    return elt.scrollHeight - elt.scrollTop - elt.clientHeight <= SLACK;
  }

  function toEnd() {
    var elt = box();
    if (elt) elt.scrollTop = elt.scrollHeight;
  }

  function showJump(show) {
    var button = jumpButton();
    if (button) button.hidden = !show;
  }

  function afterSwap() {
    var elt = box();
    if (!elt) return;
    if (following) {
      toEnd();
    } else if (!atEnd(elt)) {
      showJump(true);
    }
  }

  document.addEventListener(
    "scroll",
    function (evt) {
      if (evt.target !== box()) return;
      following = atEnd(evt.target);
      if (following) showJump(false);
    },
    true
  );
  document.addEventListener("htmx:afterSwap", afterSwap);
  document.addEventListener("htmx:oobAfterSwap", afterSwap);

  // Folds inside the live fragment (<details data-keep-open id=...>) come back closed with every
  // refresh: one the reader opened (or closed) is set back the way they left it, in the task
  // that swapped it in, so it never shows closed in between.
  var folds = {};

  document.addEventListener(
    "toggle",
    function (evt) {
      var fold = evt.target;
      if (fold.id && fold.hasAttribute && fold.hasAttribute("data-keep-open")) {
        folds[fold.id] = fold.open;
      }
    },
    true
  );
  document.addEventListener("htmx:afterSwap", function () {
    document.querySelectorAll("details[data-keep-open][id]").forEach(function (fold) {
      if (Object.prototype.hasOwnProperty.call(folds, fold.id)) fold.open = folds[fold.id];
    });
  });

  document.addEventListener("click", function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (!target) return;
    var jump = target.closest("[data-log-jump]");
    if (jump) {
      following = true;
      showJump(false);
      toEnd();
      return;
    }
  });

  // The server's clock minus this computer's, per freshness line, taken when the line came
  // (from its data-now): a computer whose clock is off still reads "40 s ago" right.
  var skews = new WeakMap();

  function parseTime(text) {
    // More than three decimals of a second are not in every browser's ISO 8601.
    return Date.parse((text || "").replace(/(\.\d{3})\d+/, "$1"));
  }

  function span(seconds) {
    return seconds < 60 ? seconds + " s" : Math.round(seconds / 60) + " min";
  }

  function tickFreshness() {
    var line = document.getElementById("log-freshness");
    if (!line || line.hidden) return;
    if (!skews.has(line)) skews.set(line, parseTime(line.dataset.now) - Date.now() || 0);
    var now = Date.now() + skews.get(line);
    var heard = line.querySelector("time[data-ago]");
    var next = line.querySelector("time[data-next]");
    var ago = heard && Math.round((now - parseTime(heard.dateTime)) / 1000);
    var wait = next && Math.round((parseTime(next.dateTime) - now) / 1000);
    if (heard && !isNaN(ago)) {
      heard.textContent = ago < 2 ? "just now" : span(ago) + " ago";
    }
    if (next && !isNaN(wait)) {
      next.textContent =
        wait > 0 ? "next check in about " + span(wait)
        : -wait <= CHECKING ? "checking now"
        : "next check overdue by " + span(-wait);
    }
  }

  // Swapped in (out of band, by an update) before the browser paints: never shown as clock
  // times for a moment.
  document.addEventListener("htmx:afterSwap", tickFreshness);
  document.addEventListener("htmx:oobAfterSwap", tickFreshness);

  function start() {
    toEnd();
    tickFreshness();
    window.setInterval(tickFreshness, 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
