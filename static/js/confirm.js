// A question before a destructive action: a form with data-confirm="question", or a submit button
// with its own data-confirm, is sent only once the question is answered yes in the page's
// <dialog id="confirm-dialog"> (templates/base.html), whose yes button takes the action's own
// words ("Remove", "Revoke"). Without JavaScript the form is sent at once, as it always was.
//
// The listener runs in the capture phase, before htmx's on the form itself, so an htmx form
// asks first too; the form is then sent again with the same button, and let through.
(function () {
  "use strict";
  var dialog = document.getElementById("confirm-dialog");
  var confirmed = null; // the form being sent again after a yes (requestSubmit is synchronous)

  function question(form, button) {
    return (button && button.dataset.confirm) || form.dataset.confirm || "";
  }

  function ask(text, action, then) {
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(text)) then();
      return;
    }
    dialog.querySelector("#confirm-question").textContent = text;
    dialog.querySelector("[data-confirm-action]").textContent = action || "Confirm";
    dialog.returnValue = "";
    dialog.addEventListener("close", function () {
      if (dialog.returnValue === "confirm") then();
    }, { once: true });
    dialog.showModal();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var text = question(form, button);
    if (!text || form === confirmed) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    var action = button ? button.textContent.trim() : "";
    ask(text, action, function () {
      confirmed = form;
      try {
        if (button && button.form === form) form.requestSubmit(button);
        else form.requestSubmit();
      } finally {
        confirmed = null;
      }
    });
  }, true);
})();
