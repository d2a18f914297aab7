// The prediction page's log viewer and its folds (copy buttons: copy.js). Without this script
// the page still works: the log shows as rendered, and the snippets can be selected by hand.
//
// Following the tail: after every swap the log box scrolls to its end, unless the reader has
// scrolled up; then a "Jump to latest" button shows instead. The box may be replaced whole
// (a reset of the viewer), so it is looked up each time and its scroll events are caught on
// the document.
(function () {
  "use strict";
  var SLACK = 24; // pixels from the end that still count as "at the end"
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

  function start() {
    toEnd();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
