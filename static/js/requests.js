// When an htmx request fails, the page says so. htmx swaps nothing for an answer of 400 and
// above, nor when Darkroom cannot be reached: a press would do nothing visible, and a live
// list would stop moving while it still looks live.
// A request a person made (a press, a submit, a choice) that fails puts a notice at the foot of
// the window (#request-notice in base.html), in the server's own words where its answer has
// them (the database outage's, dashboard/outage.py); the next one replaces it. A live refresh
// (hx-trigger="every Ns", static/js/live.js) that fails shows one quiet line instead, until a
// refresh goes through: htmx polls on after a failure. The studio's Generate shows the outage
// in its form (static/js/studio.js), which htmx then counts as no failure: it is not shown twice.
(function () {
  "use strict";
  var UNREACHABLE = "Darkroom could not be reached. Try again in a moment; " +
    "reloading the page shows what was done.";
  var UNANSWERED = "Darkroom did not answer in time, so this may or may not have been done. " +
    "Reload the page to see, then try again.";
  var NOT_LOADED = "Darkroom could not load this (error %s). Try again in a moment.";
  var returnFocus = null; // what sent the request the notice is about

  var isPoller = window.darkroom.isPoller; // static/js/live.js, loaded before this

  function sender(evt) {
    return (evt.detail.requestConfig && evt.detail.requestConfig.elt) || evt.detail.elt;
  }

  // The cost estimate refreshes on the studio form's changes: those are not its own presses.
  function followsAnother(elt, evt) {
    var cause = evt.detail.requestConfig && evt.detail.requestConfig.triggeringEvent;
    return Boolean(cause && cause.target instanceof Node && !elt.contains(cause.target));
  }

  function message(evt) {
    var xhr = evt.detail.xhr;
    if (evt.type === "htmx:timeout") return UNANSWERED;
    if (evt.type !== "htmx:responseError") return UNREACHABLE;
    var answer = new DOMParser().parseFromString(xhr.responseText, "text/html");
    var said = answer.querySelector(".outage-notice");
    if (said && said.textContent.trim()) return said.textContent.trim();
    var verb = evt.detail.requestConfig && evt.detail.requestConfig.verb;
    if (xhr.status >= 500 && verb === "get") return NOT_LOADED.replace("%s", xhr.status);
    if (xhr.status >= 500) {
      return "Darkroom failed (error " + xhr.status + "), so this may or may not have been " +
        "done. Reload the page to see, then try again.";
    }
    return "Darkroom refused this (error " + xhr.status + "). Reload the page and try again.";
  }

  // Over an open modal (the gallery's lightbox) the rest of the page is hidden and inert: the
  // notices show inside it while it is open.
  function shown() {
    var box = document.getElementById("request-status");
    var host = document.querySelector("dialog:modal") || document.body;
    if (box && box.parentElement !== host) host.append(box);
    return box;
  }

  // A closed dialog takes what is in it out of sight: the notices go back to the page.
  document.addEventListener("close", shown, true);

  function notify(text, from) {
    var region = shown() && document.getElementById("request-notice");
    if (!region) return;
    returnFocus = from;
    var box = document.createElement("div");
    var words = document.createElement("p");
    words.textContent = text;
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "dismiss";
    dismiss.setAttribute("aria-label", "Dismiss this notice");
    var cross = document.createElement("span");
    cross.setAttribute("aria-hidden", "true");
    cross.textContent = "×";
    dismiss.append(cross);
    dismiss.addEventListener("click", function () {
      region.replaceChildren();
      // Back where the keyboard was, not the top of the page.
      var back = returnFocus;
      if (back && back.tagName === "FORM") back = back.querySelector("button, [type=submit]");
      if (back && back.isConnected) back.focus({ preventScroll: true });
    });
    box.append(words, dismiss);
    region.replaceChildren(box);
  }

  function paused(yes) {
    var line = shown() && document.getElementById("live-paused");
    if (line) line.hidden = !yes;
  }

  function failed(evt) {
    var elt = sender(evt);
    if (isPoller(elt)) paused(true);
    else if (!followsAnother(elt, evt)) notify(message(evt), elt);
  }

  document.addEventListener("htmx:responseError", failed);
  document.addEventListener("htmx:sendError", failed);
  document.addEventListener("htmx:timeout", failed);

  document.addEventListener("htmx:afterRequest", function (evt) {
    if (evt.detail.successful && isPoller(sender(evt))) paused(false);
  });
})();
