// The gallery's lightbox. Tiles are plain links to their prediction, so the gallery works without
// JavaScript; with it, a click (or Enter) opens the tile in a <dialog>: Left and Right move through
// the tiles, Esc closes it and puts focus back on the tile. Everything shown comes from the tile's
// data attributes and is set as text, never parsed as HTML.
(function () {
  "use strict";
  var dialog = document.getElementById("lightbox");
  if (!dialog) return;
  var currentId = null;

  function part(name) {
    return document.getElementById("lightbox-" + name);
  }

  function tiles() {
    return Array.prototype.slice.call(document.querySelectorAll("#gallery .tile"));
  }

  function show(tile) {
    var data = tile.dataset;
    currentId = tile.id;
    part("image").src = data.image;
    part("image").alt = data.prompt;
    part("prompt").textContent = data.prompt;
    part("model").textContent = data.model;
    part("member").textContent = data.member;
    part("predict-time").textContent = data.predictTime ? data.predictTime + " s" : "—";
    part("image-count").textContent = data.imageCount || "—";
    part("input").textContent = data.input;
    part("download").href = data.image;
    part("open").href = tile.href;
    var all = tiles();
    var index = all.indexOf(tile);
    dialog.querySelector('[data-step="-1"]').disabled = index <= 0;
    dialog.querySelector('[data-step="1"]').disabled = index === all.length - 1;
    // Keeps the page behind in step, so infinite scroll loads more as the last tiles show.
    tile.scrollIntoView({ block: "nearest" });
  }

  function step(delta) {
    var all = tiles();
    var index = all.findIndex(function (tile) { return tile.id === currentId; });
    var next = all[index + delta];
    if (index >= 0 && next) show(next);
  }

  document.addEventListener("click", function (event) {
    var tile = event.target.closest("#gallery .tile");
    // A modified click keeps its usual meaning: open the prediction in a new tab or window.
    if (!tile || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    show(tile);
    dialog.showModal();
  });

  dialog.addEventListener("click", function (event) {
    var button = event.target.closest("[data-step]");
    if (button) step(Number(button.dataset.step));
  });

  dialog.addEventListener("keydown", function (event) {
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else return;
    event.preventDefault();
  });

  dialog.addEventListener("close", function () {
    // By id: a refresh may have replaced the tile with an identical one since it was opened.
    var tile = currentId && document.getElementById(currentId);
    if (tile) tile.focus();
  });
})();
