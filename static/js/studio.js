// The studio (templates/predictions/new.html): Ctrl/Cmd+Enter generates from any input, the
// prompt counts its characters against the model's limit, a refused Generate shows why in
// place (htmx leaves 4xx answers unswapped unless the server retargets them), a Generate sent
// while the database is down says so at the top of the form, which keeps what was typed (the
// 503 of dashboard/outage.py, which htmx would not swap either), a second press with the same
// inputs right after the first is taken for a double press, the model picker says which
// model's inputs it carries over, and a page the browser restores (back button) whose inputs
// are not those of the model it names is loaded afresh.
(function () {
  "use strict";
  var REPEAT_WINDOW = 1500;
  var lastSent = { values: null, at: 0 };

  function studioForm() {
    return document.getElementById("studio-form");
  }

  function values(form) {
    var data = new FormData(form);
    data.delete("request_key");
    data.delete("csrfmiddlewaretoken");
    return new URLSearchParams(data).toString();
  }

  document.addEventListener("keydown", function (evt) {
    var form = evt.target.closest && evt.target.closest("#studio-form");
    if (!form || evt.key !== "Enter" || !(evt.ctrlKey || evt.metaKey)) return;
    evt.preventDefault();
    form.requestSubmit();
  });

  document.addEventListener("htmx:confirm", function (evt) {
    var form = evt.detail.elt;
    if (form.id !== "studio-form") return;
    var now = Date.now();
    if (values(form) === lastSent.values && now - lastSent.at < REPEAT_WINDOW) {
      evt.preventDefault();
      return;
    }
    lastSent = { values: values(form), at: now };
  });

  document.addEventListener("htmx:configRequest", function (evt) {
    var inputs = document.getElementById("model-inputs");
    if (inputs && evt.detail.elt.classList.contains("model-picker")) {
      evt.detail.parameters.previous = inputs.dataset.model || "";
    }
  });

  // A Generate that went through: what the form said was wrong no longer is. One that did not
  // (its answer swapped as a success all the same: see htmx:beforeSwap below) may be pressed
  // again at once: the database being back is no double press.
  document.addEventListener("htmx:afterRequest", function (evt) {
    var form = evt.detail.elt;
    if (form.id !== "studio-form") return;
    if (!evt.detail.successful || evt.detail.xhr.status >= 400) {
      lastSent = { values: null, at: 0 };
      return;
    }
    form.querySelectorAll(".has-error").forEach(function (field) {
      field.classList.remove("has-error");
    });
    form.querySelectorAll(".field .error, [role=alert]").forEach(function (error) {
      error.remove();
    });
  });

  function count(field) {
    var note = document.querySelector('[data-count-for="' + field.id + '"]');
    if (!note) return;
    var limit = Number(field.getAttribute("maxlength"));
    var used = field.value.length;
    note.hidden = false;
    note.textContent = used.toLocaleString() + " / " + limit.toLocaleString() + " characters";
    note.classList.toggle("near-limit", used > limit * 0.9);
  }

  document.addEventListener("input", function (evt) {
    if (evt.target.matches && evt.target.matches("[data-counter]")) count(evt.target);
  });

  function countAll() {
    document.querySelectorAll("[data-counter]").forEach(count);
  }

  document.addEventListener("htmx:beforeSwap", function (evt) {
    var status = evt.detail.xhr.status;
    var elt = evt.detail.requestConfig && evt.detail.requestConfig.elt;
    var retargeted = evt.detail.xhr.getResponseHeader("HX-Retarget");
    if (!retargeted || !elt || !elt.closest("[data-studio]")) return;
    if (status === 503) {
      // The outage's message goes first in the form: the previous one, if any, goes.
      evt.detail.target.querySelectorAll(".outage-notice").forEach(function (notice) {
        notice.remove();
      });
    } else if (status < 400 || status >= 500) {
      return;
    }
    evt.detail.shouldSwap = true;
    evt.detail.isError = false;
  });

  document.addEventListener("htmx:afterSettle", countAll);

  window.addEventListener("pageshow", function () {
    var form = studioForm();
    var inputs = document.getElementById("model-inputs");
    var model = form && form.elements.namedItem("model");
    var picker = document.getElementById("pick-model");
    if (inputs && model && model.type === "hidden" && model.value !== inputs.dataset.model) {
      window.location.reload();
      return;
    }
    if (picker && inputs && inputs.dataset.model && picker.value !== inputs.dataset.model &&
        picker.querySelector('option[value="' + CSS.escape(inputs.dataset.model) + '"]')) {
      picker.value = inputs.dataset.model;
    }
    countAll();
  });
})();
