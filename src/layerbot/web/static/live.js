// The dashboard's only script: refresh the parts of a page that move, and confirm actions.
// <div data-live="/url" data-every="ms"> is replaced by GET /url until the answer says it is
// done (header X-Live-Done). Pages work without it; it only spares reloading by hand.
(function () {
  "use strict";
  function poll(el) {
    var every = parseInt(el.getAttribute("data-every") || "2000", 10);
    var url = el.getAttribute("data-live");
    function tick() {
      if (document.hidden) { return setTimeout(tick, every); }
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "live" } })
        .then(function (r) {
          if (!r.ok) { throw new Error(r.status); }
          var done = r.headers.get("X-Live-Done") === "1";
          return r.text().then(function (html) {
            el.innerHTML = html;
            bindConfirm(el);
            if (!done) { setTimeout(tick, every); }
          });
        })
        .catch(function () { setTimeout(tick, every * 3); });
    }
    setTimeout(tick, every);
  }
  function bindConfirm(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    bindConfirm(document);
    document.querySelectorAll("[data-live]").forEach(function (el) {
      if (!el.hasAttribute("data-done")) { poll(el); }
    });
  });
})();
