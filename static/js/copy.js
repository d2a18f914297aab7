// Copy buttons: <button type="button" data-copy="ID" hidden> copies the value of the field #ID
// (an invite or share link), or the text of any other element #ID (a <pre> snippet). The
// buttons are hidden until this script shows them: without it the text is selected by hand.
//
// The clipboard API works where the page may use it (HTTPS or localhost); elsewhere the text is
// selected and the reader is told how to copy it.
(function () {
  "use strict";
  var SAID_FOR = 2000;

  function textOf(source) {
    return source.matches("input, textarea") ? source.value : source.textContent;
  }

  function select(source) {
    if (source.matches("input, textarea")) {
      source.select();
      return;
    }
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // What happened: in the page's status line if it has one, else on the button for a moment.
  function say(button, copied) {
    var status = document.querySelector("[data-copy-status]");
    if (status) {
      status.textContent = copied
        ? "Copied to the clipboard."
        : "Copying is not available here: the text is selected, press Ctrl+C (⌘C on a Mac).";
      return;
    }
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = copied ? "Copied" : "Press Ctrl+C to copy";
    clearTimeout(button.copyTimer);
    button.copyTimer = setTimeout(function () {
      button.textContent = button.dataset.label;
    }, SAID_FOR);
  }

  function copy(button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    function selectInstead() {
      select(source);
      say(button, false);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(textOf(source)).then(function () {
        say(button, true);
      }, selectInstead);
    } else {
      selectInstead();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element && event.target.closest("[data-copy]");
    if (button) copy(button);
  });

  function show(root) {
    if (root.matches && root.matches("[data-copy]")) root.hidden = false;
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      button.hidden = false;
    });
  }

  // Buttons in fragments that htmx swaps in are shown too.
  document.addEventListener("htmx:load", function (event) {
    show(event.target);
  });
  show(document);
})();
