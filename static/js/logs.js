// The prediction page's log viewer and copy buttons. Without this script the page still works:
// the log shows as rendered, and the snippets can be selected and copied by hand.
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

  // Copy buttons: the clipboard API where the page may use it (HTTPS or localhost), else the
  // text is selected and the reader is told how to copy it.
  function copy(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    var status = document.querySelector("[data-copy-status]");
    if (!source) return;
    function say(message) {
      if (status) status.textContent = message;
    }
    function selectText() {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      say("Copying is not available here: the text is selected, press Ctrl+C (⌘C on a Mac).");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.textContent).then(function () {
        say("Copied to the clipboard.");
      }, selectText);
    } else {
      selectText();
    }
  }

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
    var button = target.closest("[data-copy]");
    if (button) copy(button);
  });

  function start() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.hidden = false;
    });
    toEnd();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
