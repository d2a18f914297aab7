// The selection toolbar (templates/outputs/_selection.html). Tiles carry plain checkboxes of the
// #selection form, so selecting works without JavaScript; this adds: the count, and buttons
// disabled while nothing is selected; shift-click to select a range; Space on a focused tile to
// toggle it, Escape to clear (when no dialog is open); the selection kept when htmx swaps tiles,
// and across the reload that brings back an error; a confirmation for buttons with data-confirm;
// copy buttons (data-copy="<input id>"); in any form (the toolbar, the lightbox's), a board chosen
// from the list clears a new board's name and the other way round, and Add without either says
// so beside the fields instead of posting (the server says the same to a page without scripts).
(function () {
  "use strict";
  var NEEDS_BOARD = "Choose a board, or name a new one, to add to.";
  // Where the ticked ids wait for the page the toolbar returns to, for a minute at most.
  var KEPT = "darkroom:selection:";
  var KEPT_FOR = 60000;

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

  function needsBoard(form, button) {
    var board = form.elements.board;
    var name = form.elements.new_board;
    return Boolean(button && button.value === "add" && board && name && !board.value && !name.value.trim());
  }

  function showBoardError(form, message) {
    var error = form.querySelector("[data-board-error]");
    var name = form.elements.new_board;
    if (error) {
      error.textContent = message;
      error.hidden = !message;
    }
    if (message) {
      name.setAttribute("aria-invalid", "true");
      name.focus();
    } else {
      name.removeAttribute("aria-invalid");
    }
  }

  function keep(form) {
    var ids = boxes().filter(function (box) { return box.checked; }).map(function (box) { return box.value; });
    try {
      sessionStorage.setItem(KEPT + form.elements.next.value, JSON.stringify({ ids: ids, at: Date.now() }));
    } catch (error) { /* no storage: the reload clears the ticks, as without scripts */ }
  }

  function kept() {
    var key = KEPT + location.pathname + location.search;
    try {
      var value = JSON.parse(sessionStorage.getItem(key));
      sessionStorage.removeItem(key);
      return value && Date.now() - value.at < KEPT_FOR ? value.ids : [];
    } catch (error) {
      return [];
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    if (needsBoard(form, button)) {
      event.preventDefault();
      showBoardError(form, NEEDS_BOARD);
      return;
    }
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    if (form.id === "selection" && form.elements.next) keep(form);
  });

  // A board chosen from the list and a new board's name exclude each other.
  document.addEventListener("input", function (event) {
    var field = event.target;
    if (!field.form || ["board", "new_board"].indexOf(field.name) < 0) return;
    var error = field.form.querySelector("[data-board-error]");
    if (error && !error.hidden) showBoardError(field.form, "");
    if (!field.value) return;
    var other = field.form.elements[field.name === "board" ? "new_board" : "board"];
    if (other) other.value = "";
  });

  var form = document.getElementById("selection");
  if (!form) return;
  var count = form.querySelector("[data-selection-count]");
  var hint = count.textContent;
  var clear = form.querySelector("[data-selection-clear]");
  var more = form.querySelector("[data-selection-more]");
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

  // On a narrow screen the actions open over the tiles: a tap elsewhere folds them away again.
  document.addEventListener("click", function (event) {
    if (!more.open || form.contains(event.target)) return;
    if (getComputedStyle(more.querySelector("summary")).display !== "none") more.open = false;
  });

  // The back button may restore ticked boxes from the browser's form cache.
  window.addEventListener("pageshow", function () {
    boxes().forEach(function (box) { if (box.checked) selected.add(box.value); });
    update();
  });

  // Back from the toolbar with an error: the same images ticked again, the actions open to retry.
  var ids = kept();
  if (ids.length && document.querySelector(".message-error")) {
    ids.forEach(function (id) { selected.add(id); });
    boxes().forEach(function (box) { if (selected.has(box.value)) box.checked = true; });
    more.open = true;
  }
  update();
})();
