// The reviewer inbox: keyboard navigation (j/k move, a approve, r revoke, Esc close), progress bars,
// and htmx conflict handling. Loaded as a file because the CSP forbids inline scripts.
(function () {
  "use strict";

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("tr.item-row"));
  }

  function current() {
    return document.querySelector("tr.item-row.kb-focus");
  }

  function focusRow(row) {
    if (!row) { return; }
    rows().forEach(function (r) { r.classList.remove("kb-focus"); });
    row.classList.add("kb-focus");
    if (document.activeElement !== row && !row.contains(document.activeElement)) { row.focus({ preventScroll: true }); }
    row.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var i = all.indexOf(current());
    var next = i < 0 ? all[0] : all[Math.max(0, Math.min(all.length - 1, i + step))];
    focusRow(next);
  }

  function typing(target) {
    if (!target) { return false; }
    var tag = (target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function closeBoxes(except) {
    document.querySelectorAll("details.revoke-box[open], details.reassign-box[open]").forEach(function (d) {
      if (d !== except) { d.open = false; }
    });
  }

  function setBars(root) {
    (root || document).querySelectorAll(".progress-bar[data-width]").forEach(function (bar) {
      var w = parseInt(bar.getAttribute("data-width"), 10);
      bar.style.width = (isNaN(w) ? 0 : Math.max(0, Math.min(100, w))) + "%";
    });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "Escape") {
      closeBoxes(null);
      var row = current();
      if (row) { row.focus(); }
      return;
    }
    if (typing(event.target)) { return; }
    var row = current();
    switch (event.key) {
      case "j": move(1); event.preventDefault(); break;
      case "k": move(-1); event.preventDefault(); break;
      case "a":
        if (row) {
          var approve = row.querySelector(".js-approve");
          if (approve) { row.dataset.advance = "1"; approve.click(); }
          event.preventDefault();
        }
        break;
      case "r":
        if (row) {
          var box = row.querySelector("details.revoke-box");
          if (box) {
            closeBoxes(box);
            box.open = true;
            var area = box.querySelector("textarea");
            if (area) { area.focus(); }
          }
          event.preventDefault();
        }
        break;
      default: break;
    }
  });

  // a click in a row makes it the keyboard row too
  document.addEventListener("click", function (event) {
    var row = event.target.closest && event.target.closest("tr.item-row");
    if (row) {
      rows().forEach(function (r) { r.classList.remove("kb-focus"); });
      row.classList.add("kb-focus");
    }
  });

  // Ctrl/Cmd+Enter in a revoke comment submits it
  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.closest && event.target.closest(".revoke-form")) {
      event.preventDefault();
      var form = event.target.closest("form");
      if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
    }
  });

  // show the row htmx sends back with a 400 (missing comment) or 409 (someone else decided first)
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if ((status === 400 || status === 409) && event.detail.target && event.detail.target.classList.contains("item-row")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // keep the keyboard position on the row that was just replaced; after "a", move on to the next one
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.classList && target.classList.contains("item-row")) {
      document.body.dataset.lastRow = target.id;
      document.body.dataset.lastAdvance = target.dataset.advance || "";
    }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    setBars(document);
    var id = document.body.dataset.lastRow;
    if (!id) { return; }
    delete document.body.dataset.lastRow;
    var row = document.getElementById(id);
    if (!row) { return; }
    var advance = document.body.dataset.lastAdvance === "1" && !row.querySelector(".alert");
    delete document.body.dataset.lastAdvance;
    focusRow(row);
    if (advance) { move(1); }
  });

  document.addEventListener("DOMContentLoaded", function () { setBars(document); });
  if (document.readyState !== "loading") { setBars(document); }
})();
