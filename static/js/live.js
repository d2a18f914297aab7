// Live fragments poll with hx-trigger="every Ns". While the tab is hidden, at most one poll per
// fragment goes through every 30 s; when the tab shows again, every live fragment refreshes at
// once. Fragments stop polling by themselves: a finished one is rendered without its trigger;
// a list's arrivals keep asking (one cheap 304 a second while nothing changes).
(function () {
  "use strict";
  var HIDDEN_INTERVAL = 30000;
  var lastPoll = new Map();

  function isPoller(elt) {
    return /\bevery\b/.test(elt.getAttribute("hx-trigger") || "");
  }
  // For static/js/requests.js, which says a failed refresh apart from a failed press.
  window.darkroom = Object.assign(window.darkroom || {}, { isPoller: isPoller });

  function key(elt) {
    return elt.id || elt.getAttribute("hx-get") || "";
  }

  document.addEventListener("htmx:confirm", function (evt) {
    var elt = evt.detail.elt;
    if (!isPoller(elt)) return;
    if (document.hidden && Date.now() - (lastPoll.get(key(elt)) || 0) < HIDDEN_INTERVAL) {
      evt.preventDefault();
      return;
    }
    lastPoll.set(key(elt), Date.now());
  });

  // A list's arrivals (templates/predictions/_arrivals.html) are only counted, not shown,
  // while its reader has scrolled its top out of view: the page must not move under them.
  document.addEventListener("htmx:configRequest", function (evt) {
    var elt = evt.detail.elt;
    var list = elt.dataset && elt.dataset.arrivals && document.getElementById(elt.dataset.arrivals);
    if (list && list.getBoundingClientRect().top < 0) evt.detail.parameters.hold = "1";
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden || !window.htmx) return;
    document.querySelectorAll("[hx-get][hx-trigger]").forEach(function (elt) {
      if (isPoller(elt)) window.htmx.ajax("GET", elt.getAttribute("hx-get"), { source: elt });
    });
  });
})();
