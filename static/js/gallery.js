// The lightbox of every page of tiles (templates/outputs/_tile.html): the gallery, a prediction's
// outputs, a share page. A tile is a plain link, so pages work without JavaScript; with it, a
// click (or Enter) on a tile in a [data-gallery] container opens it in the <dialog>: Left and
// Right move through the page's tiles, Esc closes it and puts focus back on the tile. Everything
// shown comes from the tile's data attributes and is set as text, never parsed as HTML; a text
// output is fetched from Darkroom's own copy and shown as text too. On the team's pages the
// lightbox's forms act on the output shown, and its star presses the tile's own, so the two
// never disagree.
(function () {
  "use strict";
  var dialog = document.getElementById("lightbox");
  if (!dialog) return;
  var TILES = "[data-gallery] .tile-link, #gallery .tile-link";
  var MEDIA = ["image", "video", "audio", "text", "missing"];
  // A text output beyond this many characters is cut: the download has all of it.
  var TEXT_LIMIT = 200000;
  var currentId = null;
  var textRequest = 0;

  function part(name) {
    return document.getElementById("lightbox-" + name);
  }

  // A share page that hides prompts has no element for them: there is nothing to fill in.
  function setText(name, value) {
    var element = part(name);
    if (element) element.textContent = value;
  }

  function setLink(name, href) {
    var link = part(name);
    if (!link) return;
    link.hidden = !href;
    if (href) link.href = href;
    else link.removeAttribute("href");
  }

  function links() {
    return Array.prototype.slice.call(document.querySelectorAll(TILES));
  }

  function stopMedia() {
    ["video", "audio"].forEach(function (name) {
      var player = part(name);
      player.pause();
      player.removeAttribute("src");
      player.load();
    });
  }

  function showText(data) {
    var box = part("text");
    var request = ++textRequest;
    // Only Darkroom's own copy: the CSP lets the page fetch nothing else.
    if (!data.download) {
      box.textContent = "The text shows here once Darkroom has saved a copy.";
      return;
    }
    box.textContent = "Loading…";
    fetch(data.image, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        var isJson = (response.headers.get("Content-Type") || "").indexOf("json") >= 0;
        return response.text().then(function (text) {
          if (isJson) {
            try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (error) { /* as it is */ }
          }
          return text;
        });
      })
      .then(function (text) {
        if (request !== textRequest) return;
        box.textContent = text.length > TEXT_LIMIT ? text.slice(0, TEXT_LIMIT) + "\n…" : text;
      })
      .catch(function () {
        if (request === textRequest) box.textContent = "The text could not be loaded. Download it instead.";
      });
  }

  function showMedia(data) {
    var shown = data.image ? data.kind : "missing";
    if (MEDIA.indexOf(shown) < 0) shown = "image";
    stopMedia();
    MEDIA.forEach(function (name) { part(name).hidden = name !== shown; });
    var image = part("image");
    if (shown === "image") {
      // The size the copy has, where known, so the box is reserved before the image arrives.
      if (data.width && data.height) {
        image.width = Number(data.width);
        image.height = Number(data.height);
      } else {
        image.removeAttribute("width");
        image.removeAttribute("height");
      }
      image.alt = data.prompt || "";
      image.src = data.image;
    } else {
      image.removeAttribute("src");
    }
    if (shown === "video" || shown === "audio") part(shown).src = data.image;
    if (shown === "text") showText(data);
  }

  function show(link) {
    var data = link.dataset;
    currentId = link.closest(".tile").id;
    showMedia(data);
    setText("title", data.prompt || "Output");
    part("state").hidden = !data.state;
    setText("state", data.state || "");
    setText("prompt", data.prompt || "");
    setText("model", data.model || "");
    setText("member", data.member || "");
    setText("predict-time", data.predictTime ? data.predictTime + " s" : "—");
    setText("image-count", data.imageCount || "—");
    // Only the team's pages that fetched the cost have one: never a guessed $0.
    setText("cost", data.cost || "—");
    setText("cost-note", data.costNote || "");
    setText("input", data.input || "");
    // Same-origin, so `download` is honoured; the copy answers as an attachment anyway.
    setLink("download", data.download);
    setLink("open", data.open);
    dialog.querySelectorAll("[data-lightbox-output]").forEach(function (input) {
      input.value = data.output;
    });
    showStar();
    var all = links();
    var index = all.indexOf(link);
    dialog.querySelector('[data-step="-1"]').disabled = index <= 0;
    dialog.querySelector('[data-step="1"]').disabled = index === all.length - 1;
    // Keeps the page behind in step, so infinite scroll loads more as the last tiles show.
    link.scrollIntoView({ block: "nearest" });
  }

  // The tile's star is the truth: the lightbox's shows it, and shows nothing where it has none.
  function showStar() {
    var button = part("star");
    var link = current();
    var star = link && link.closest(".tile").querySelector(".star-form [aria-pressed]");
    if (!button) return;
    button.hidden = !star;
    if (!star) return;
    var pressed = star.getAttribute("aria-pressed") === "true";
    button.setAttribute("aria-pressed", String(pressed));
    button.firstElementChild.textContent = pressed ? "★" : "☆";
    button.lastElementChild.textContent = pressed ? "Starred" : "Star";
  }

  function current() {
    var tile = currentId && document.getElementById(currentId);
    return tile ? tile.querySelector(".tile-link") : null;
  }

  function step(delta) {
    var all = links();
    var index = all.indexOf(current());
    var next = all[index + delta];
    if (index >= 0 && next) show(next);
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest(TILES);
    // A modified click keeps its usual meaning: open the link in a new tab or window.
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    show(link);
    dialog.showModal();
  });

  dialog.addEventListener("click", function (event) {
    var button = event.target.closest("[data-step]");
    if (button) step(Number(button.dataset.step));
    var link = event.target.closest("#lightbox-star") && current();
    // htmx posts the tile's form and swaps in its new star; showStar then follows it.
    var form = link && link.closest(".tile").querySelector(".star-form");
    if (form) form.requestSubmit();
  });

  document.addEventListener("htmx:afterSwap", function () {
    if (dialog.open) showStar();
  });

  dialog.addEventListener("keydown", function (event) {
    // A player uses the arrow keys to seek and to change the volume; a field, to move in it.
    if (event.target.closest("video, audio, input, select, textarea")) return;
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else return;
    event.preventDefault();
  });

  dialog.addEventListener("close", function () {
    stopMedia();
    textRequest++;
    // By id: a refresh may have replaced the tile with an identical one since it was opened.
    var link = current();
    if (link) link.focus();
  });
})();
