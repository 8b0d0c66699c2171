// Send the CSRF token with every htmx request (the CSP forbids inline scripts, so it lives here).
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) { event.detail.headers["X-CSRFToken"] = meta.content; }
});
// Forms that ask before they submit: <form data-confirm="Approve 12 items?">
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); }
}, true);
// A request htmx sent that failed on the server or never arrived: say so at the top of the page (the row
// stays as it was; a 503 means the database is unavailable and the change may not have been saved).
(function () {
  function banner(text) {
    var el = document.getElementById("request-error");
    if (!el) {
      el = document.createElement("div");
      el.id = "request-error";
      el.className = "alert alert-danger m-3 request-error";
      el.setAttribute("role", "alert");
      var main = document.querySelector("main") || document.body;
      main.insertBefore(el, main.firstChild);
    }
    el.textContent = text;
  }
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || xhr.status < 500) { return; }
    var text = xhr.getResponseHeader("Content-Type") && xhr.getResponseHeader("Content-Type").indexOf("text/plain") === 0
      ? xhr.responseText : "Attest could not complete that request (HTTP " + xhr.status + "). It may not have been saved.";
    banner(text);
  });
  document.addEventListener("htmx:sendError", function () {
    banner("Attest did not answer. What you were saving may not have been saved: check once it answers again.");
  });
})();
