// The selection toolbar (templates/outputs/_selection.html). Tiles carry plain checkboxes of the
// #selection form, so selecting works without JavaScript; this adds: the count, and buttons
// disabled while nothing is selected; shift-click to select a range; Space on a focused tile to
// toggle it, Escape to clear (when no dialog is open); the selection kept when htmx swaps tiles;
// a confirmation for buttons with data-confirm; copy buttons (data-copy="<input id>"); in any
// form (the toolbar, the lightbox's), a board chosen from the list clears a new board's name and
// the other way round.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var input = document.getElementById(button.dataset.copy);
    // The prediction page's snippets are <pre>s: static/js/logs.js copies those.
    if (!input || !input.matches("input")) return;
    input.select();
    navigator.clipboard.writeText(input.value).then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Press Ctrl+C to copy";
    });
  });
  document.querySelectorAll("[data-copy]").forEach(function (button) { button.hidden = false; });

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // A board chosen from the list and a new board's name exclude each other.
  document.addEventListener("input", function (event) {
    var field = event.target;
    if (!field.form || !field.value || ["board", "new_board"].indexOf(field.name) < 0) return;
    var other = field.form.elements[field.name === "board" ? "new_board" : "board"];
    if (other) other.value = "";
  });

  var form = document.getElementById("selection");
  if (!form) return;
  var count = form.querySelector("[data-selection-count]");
  var hint = count.textContent;
  var clear = form.querySelector("[data-selection-clear]");
  // Output ids, so a tile swapped in by htmx comes back ticked if it was.
  var selected = new Set();
  var lastClicked = null;

  function boxes() {
    return Array.prototype.slice.call(
      document.querySelectorAll('input[type="checkbox"][name="outputs"][form="selection"]')
    );
  }

  function update() {
    var ticked = boxes().filter(function (box) { return box.checked; }).length;
    count.textContent = ticked ? ticked + " selected" : hint;
    form.querySelectorAll("[data-needs-selection]").forEach(function (button) {
      button.disabled = ticked === 0;
    });
    clear.hidden = ticked === 0;
  }

  function set(box, checked) {
    box.checked = checked;
    if (checked) selected.add(box.value);
    else selected.delete(box.value);
  }

  document.addEventListener("click", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches('input[name="outputs"][form="selection"]')) return;
    var all = boxes();
    if (event.shiftKey && lastClicked && all.indexOf(lastClicked) >= 0) {
      var from = all.indexOf(lastClicked);
      var to = all.indexOf(box);
      all.slice(Math.min(from, to), Math.max(from, to) + 1).forEach(function (other) {
        set(other, box.checked);
      });
    }
    set(box, box.checked);
    lastClicked = box;
    update();
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !document.querySelector("dialog[open]")) {
      if (!boxes().some(function (box) { return box.checked; })) return;
      boxes().forEach(function (box) { set(box, false); });
      update();
      return;
    }
    if (event.key !== " " || event.target.matches("input, select, textarea, button")) return;
    // Space on a focused tile (its link) toggles the tile's checkbox.
    var tile = event.target.closest(".tile");
    var box = tile && tile.querySelector('input[name="outputs"][form="selection"]');
    if (!box) return;
    event.preventDefault();
    set(box, !box.checked);
    lastClicked = box;
    update();
  });

  clear.addEventListener("click", function () {
    boxes().forEach(function (box) { set(box, false); });
    update();
  });

  document.addEventListener("htmx:afterSwap", function () {
    boxes().forEach(function (box) {
      if (selected.has(box.value)) box.checked = true;
    });
    update();
  });

  // The back button may restore ticked boxes from the browser's form cache.
  window.addEventListener("pageshow", function () {
    boxes().forEach(function (box) { if (box.checked) selected.add(box.value); });
    update();
  });
  update();
})();
