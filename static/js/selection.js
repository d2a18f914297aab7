// The selection toolbar (templates/outputs/_selection.html). Tiles carry plain checkboxes of the
// #selection form, so selecting works without JavaScript; this adds: the count, and buttons
// disabled while nothing is selected; shift-click to select a range; Space on a focused tile to
// toggle it, Escape to clear (when no dialog is open); the selection kept when htmx swaps tiles,
// and across the reload that brings back an error; in any form (the toolbar, the lightbox's), a
// board chosen from the list clears a new board's name and the other way round, and Add without
// either says so beside the fields instead of posting (the server says the same to a page
// without scripts); Compare, which opens the compare page with the ticked images' predictions,
// each once, or says beside it why it cannot (two to four are compared).
(function () {
  "use strict";
  var NEEDS_BOARD = "Choose a board, or name a new one, to add to.";
  // Where the ticked ids wait for the page the toolbar returns to, for a minute at most.
  var KEPT = "darkroom:selection:";
  var KEPT_FOR = 60000;

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
  var compare = form.querySelector("[data-compare]");
  var compareError = form.querySelector("[data-compare-error]");
  var compareMost = 4;
  var lastTicked = -1;
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
    // What Compare said is about the ticks it saw: a change of them takes it away.
    if (compareError && ticked !== lastTicked) compareError.hidden = true;
    lastTicked = ticked;
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

  // The ticked images' predictions, each once, in the page's order. A tile's link says which
  // prediction it is from: data-open is that prediction's page, /predictions/<id>/.
  function tickedPredictions() {
    var ids = [];
    boxes().forEach(function (box) {
      var link = box.checked && box.closest(".tile").querySelector(".tile-link[data-open]");
      var id = link && (link.dataset.open.match(/\/(\d+)\/?$/) || [])[1];
      if (id && ids.indexOf(id) < 0) ids.push(id);
    });
    return ids;
  }

  if (compare) {
    compare.hidden = false;
    compare.addEventListener("click", function () {
      var ids = tickedPredictions();
      var problem = "";
      if (ids.length < 2) {
        problem = "These images are all of one prediction: tick images of two to four different predictions to compare them.";
      } else if (ids.length > compareMost) {
        problem = "These images are of " + ids.length + " predictions: tick images of two to four to compare them.";
      }
      compareError.textContent = problem;
      compareError.hidden = !problem;
      if (problem) return;
      location.assign(compare.dataset.compare + "?" + ids.map(function (id) { return "p=" + id; }).join("&"));
    });
  }

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
