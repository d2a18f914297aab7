// While the tab is hidden, its title and favicon count the reader's own predictions that ended
// meanwhile: "(2) History · Darkroom", and a badge drawn on the icon. Showing the tab again
// clears both.
//
// The server marks what is the reader's: an element with data-mine="<prediction id>", and
// data-ended once that prediction has ended (the status tag, predictions/templatetags/statuses.py,
// on every page). After every htmx swap the page is read again; an id seen ended for the first
// time while the tab is hidden counts.
(function () {
  "use strict";
  var icon = document.querySelector('link[rel="icon"]');
  var plainIcon = icon && icon.href;
  var plainTitle = document.title;
  var endedSeen = new Set();
  var count = 0;

  function newlyEnded() {
    var found = 0;
    document.querySelectorAll("[data-mine][data-ended]").forEach(function (elt) {
      if (endedSeen.has(elt.dataset.mine)) return;
      endedSeen.add(elt.dataset.mine);
      found += 1;
    });
    return found;
  }

  // The favicon with a red disc holding the count, as a PNG data: URL (the CSP's img-src allows
  // data:). Drawn from the page's own icon, so a new icon needs no change here.
  function drawBadge(text) {
    var image = new Image();
    image.onload = function () {
      if (!count) return; // shown again while the icon loaded
      var size = 64;
      var canvas = document.createElement("canvas");
      canvas.width = canvas.height = size;
      var context = canvas.getContext("2d");
      context.drawImage(image, 0, 0, size, size);
      context.fillStyle = "#d32f2f";
      context.beginPath();
      context.arc(size * 0.68, size * 0.32, size * 0.32, 0, 2 * Math.PI);
      context.fill();
      context.fillStyle = "#ffffff";
      context.font = "bold " + (text.length > 1 ? 30 : 40) + "px sans-serif";
      context.textAlign = "center";
      context.textBaseline = "middle";
      context.fillText(text, size * 0.68, size * 0.34);
      icon.href = canvas.toDataURL("image/png");
    };
    image.src = plainIcon;
  }

  function show() {
    document.title = count ? "(" + count + ") " + plainTitle : plainTitle;
    if (!icon) return;
    if (count) drawBadge(count > 9 ? "9+" : String(count));
    else icon.href = plainIcon;
  }

  function read() {
    var found = newlyEnded();
    if (found && document.hidden) {
      count += found;
      show();
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      plainTitle = document.title;
      return;
    }
    if (!count) return;
    count = 0;
    show();
  });
  document.addEventListener("htmx:afterSettle", read);
  document.addEventListener("htmx:oobAfterSwap", read);
  newlyEnded();
})();
