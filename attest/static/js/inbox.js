// The reviewer inbox: keyboard shortcuts (j/k move, a approve, r revoke with a comment, Ctrl+Enter save the
// comment, Esc close), progress bars, and htmx conflict handling. Loaded as a file: the CSP forbids inline scripts.
//
// The keyboard never changes a decision by accident:
// - keys typed into a field (input, textarea, select, contenteditable) or belonging to an IME composition are
//   never shortcuts, and a held key (auto-repeat) decides nothing;
// - `r` opens the comment box and focuses it at once, inside the keydown, so the very next key lands in it;
// - a decision that would replace another one (shortcut, Ctrl+Enter or button) is sent only after an explicit
//   confirmation in a dialog whose default answer keeps the decision (Esc cancels);
// - when a decision is sent, the keyboard moves on to the next undecided row at once, and the row's answer,
//   when it is swapped in, never takes the focus from where the reviewer has gone since; a comment being typed
//   in a row that is swapped is kept in the new row.
(function () {
  "use strict";

  var keys = 0;      // keydowns so far: a refused save takes the focus back only if no key came since
  var advanced = {}; // row id -> {to: row id, keys: keys} for a save that moved the keyboard on
  var kept = {};     // row id -> the comment being typed in that row when it was swapped
  var dialog = null; // the "change this decision?" dialog, made on first use
  var asking = null; // what the open dialog is asking about
  var kbRow = "";    // id of the keyboard row, to mark it again after htmx settles a swapped row

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("tr.item-row"));
  }

  function current() {
    return document.querySelector("tr.item-row.kb-focus");
  }

  function rowOf(el) {
    return el && el.closest ? el.closest("tr.item-row") : null;
  }

  // the row's saved decision ("" while undecided), from the class the server renders
  function savedDecision(row) {
    var m = /(?:^|\s)decided-(\w+)/.exec(row.className);
    return m ? m[1] : "";
  }

  // the decision a request of a row sends: a button's own (Approve, Abstain: name="decision"), or its comment
  // form's (Revoke, Approve with a comment); "" for one that decides nothing (Undo, Reassign)
  function formDecision(elt) {
    if (!elt) { return ""; }
    if (elt.name === "decision") { return elt.value; }
    var input = elt.querySelector ? elt.querySelector("input[name=decision]") : null;
    return input ? input.value : "";
  }

  function saving(row) {
    return row.classList.contains("is-saving");
  }

  function undecided(row) {
    return !savedDecision(row) && !saving(row) && !!row.querySelector(".js-approve");
  }

  function nextUndecided(row) {
    var all = rows(), i = all.indexOf(row);
    for (var k = 1; k <= all.length; k++) {
      var r = all[(i + k + all.length) % all.length];
      if (r !== row && undecided(r)) { return r; }
    }
    return null;
  }

  function focusRow(row) {
    if (!row) { return; }
    markRow(row);
    if (document.activeElement !== row && !row.contains(document.activeElement)) { row.focus({ preventScroll: true }); }
    row.scrollIntoView({ block: "nearest" });
  }

  function markRow(row) {
    rows().forEach(function (r) { if (r !== row) { r.classList.remove("kb-focus"); } });
    row.classList.add("kb-focus");
    kbRow = row.id;
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var i = all.indexOf(current());
    var next = i < 0 ? all[0] : all[Math.max(0, Math.min(all.length - 1, i + step))];
    focusRow(next);
  }

  function typing(el) {
    if (!el || el.nodeType !== 1) { return false; }
    var tag = el.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || el.isContentEditable;
  }

  function composing(event) {
    return event.isComposing || event.keyCode === 229;
  }

  function focusLost() {
    return !document.activeElement || document.activeElement === document.body;
  }

  function closeBoxes(except) {
    document.querySelectorAll("details.revoke-box[open], details.approve-box[open], details.reassign-box[open]").forEach(function (d) {
      if (d !== except) { d.open = false; }
    });
  }

  // open the row's comment box (revoke, or approve where approving needs a comment) and focus it now (not
  // in a later task): the next key must land in it
  function openComment(row, kind) {
    var box = row.querySelector("details." + (kind || "revoke") + "-box");
    if (!box) { return null; }
    closeBoxes(box);
    box.open = true;
    var area = box.querySelector("textarea");
    if (area) { area.focus(); }
    return area;
  }

  function setBars(root) {
    (root || document).querySelectorAll(".progress-bar[data-width]").forEach(function (bar) {
      var w = parseInt(bar.getAttribute("data-width"), 10);
      bar.style.width = (isNaN(w) ? 0 : Math.max(0, Math.min(100, w))) + "%";
    });
  }

  // --- "change this decision?" ----------------------------------------------------------------------------

  function dialogOpen() {
    return !!(dialog && dialog.open);
  }

  function makeDialog() {
    if (dialog) { return dialog; }
    dialog = document.createElement("dialog");
    dialog.className = "decision-confirm";
    dialog.setAttribute("aria-labelledby", "decision-confirm-title");
    dialog.setAttribute("aria-describedby", "decision-confirm-text");
    dialog.innerHTML =
      '<h2 class="h6 mb-2" id="decision-confirm-title"></h2>' +
      '<p class="small mb-3" id="decision-confirm-text"></p>' +
      '<div class="d-flex justify-content-end gap-2">' +
      '<button type="button" class="btn btn-sm btn-outline-secondary js-keep"></button>' +
      '<button type="button" class="btn btn-sm btn-warning js-change"></button>' +
      "</div>";
    dialog.querySelector(".js-keep").addEventListener("click", function () { answer(false); });
    dialog.querySelector(".js-change").addEventListener("click", function () { answer(true); });
    dialog.addEventListener("cancel", function (event) { event.preventDefault(); answer(false); }); // Esc
    dialog.addEventListener("close", function () { if (!dialog.open) { answer(false); } }); // closed some other way
    document.body.appendChild(dialog);
    return dialog;
  }

  function answer(change) {
    var q = asking;
    asking = null;
    if (!q) { return; }
    if (dialog.open) { dialog.close(); }
    var back = q.back && q.back.isConnected && q.back !== document.body ? q.back : (q.row.isConnected ? q.row : null);
    if (back) { back.focus({ preventScroll: true }); }
    if (change) { q.proceed(); }
  }

  function askToChange(row, from, to, proceed) {
    var d = makeDialog();
    if (asking || d.open) { return; } // one question at a time; the one asked first stands
    var area = row.querySelector(".revoke-form textarea");
    var comment = area ? area.defaultValue.trim() : "";
    if (comment.length > 120) { comment = comment.slice(0, 117) + "..."; }
    d.querySelector("#decision-confirm-title").textContent = "Change " + from + " to " + to + "?";
    d.querySelector("#decision-confirm-text").textContent = comment && to !== "revoke"
      ? "This discards the comment \u201c" + comment + "\u201d."
      : "This replaces the saved decision (" + from + ").";
    d.querySelector(".js-keep").textContent = "Keep " + from;
    d.querySelector(".js-change").textContent = "Change to " + to;
    asking = { row: row, proceed: proceed, back: document.activeElement };
    d.showModal();
    d.querySelector(".js-keep").focus(); // Enter or Space right away keeps the decision
  }

  // every decision that would replace another one asks first, whatever sent it (htmx asks this before each request)
  document.addEventListener("htmx:confirm", function (event) {
    var form = event.detail.elt, row = rowOf(form), to = formDecision(form);
    if (!row || !to) { return; }
    var from = savedDecision(row);
    if (!from || from === to) { return; }
    event.preventDefault();
    askToChange(row, from, to, function () { event.detail.issueRequest(true); });
  });

  // --- reassign: its form is fetched when the box is first opened (without JavaScript, the box links to it) ---

  document.addEventListener("toggle", function (event) {
    var box = event.target;
    if (!box.open || !box.matches || !box.matches("details.reassign-box")) { return; }
    var link = box.querySelector("a.js-reassign-form");
    if (!link || link.dataset.loading) { return; }
    link.dataset.loading = "1";
    htmx.ajax("GET", link.getAttribute("href"), { source: link, target: link, swap: "outerHTML" })
      .catch(function () { delete link.dataset.loading; });
  }, true); // toggle does not bubble

  // --- keys ----------------------------------------------------------------------------------------------

  window.addEventListener("keydown", function () { keys += 1; }, true);

  document.addEventListener("keydown", function (event) {
    if (composing(event) || dialogOpen()) { return; }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "Escape") {
      closeBoxes(null);
      var focused = current();
      if (focused) { focused.focus(); }
      return;
    }
    if (typing(event.target) || typing(document.activeElement)) { return; }
    var row = current();
    switch (event.key) {
      case "j": move(1); event.preventDefault(); break;
      case "k": move(-1); event.preventDefault(); break;
      case "a":
        if (row) {
          event.preventDefault();
          var approve = row.querySelector(".js-approve");
          if (!event.repeat && !saving(row)) {
            if (row.querySelector("details.approve-box")) { openComment(row, "approve"); }
            else if (approve) { approve.click(); }
          }
        }
        break;
      case "r":
        if (row) {
          event.preventDefault();
          if (!event.repeat) { openComment(row); }
        }
        break;
      default: break;
    }
  });

  // Ctrl/Cmd+Enter in a comment box (revoke, or approve with a comment) submits it
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || composing(event) || dialogOpen()) { return; }
    var form = event.target.closest && event.target.closest(".comment-form");
    if (!form) { return; }
    event.preventDefault();
    if (event.repeat) { return; }
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
  });

  // a click in a row makes it the keyboard row too: first (capture), so that a decision the click sends (htmx
  // sends an Approve or Abstain button's at once, from its own click) then moves the keyboard on
  document.addEventListener("click", function (event) {
    var row = rowOf(event.target);
    if (row) { markRow(row); }
  }, true);

  // --- a decision on its way -----------------------------------------------------------------------------

  // sent: the row is busy, and if the reviewer was on it, the keyboard moves on to the next undecided row now
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt, row = rowOf(form);
    if (!row || !formDecision(form)) { return; }
    var area = form.querySelector("textarea[name=comment]");
    row.dataset.sentComment = area ? area.value : "";
    row.classList.add("is-saving");
    row.setAttribute("aria-busy", "true");
    if (row === current() || row.contains(document.activeElement)) {
      var next = nextUndecided(row);
      if (next) {
        advanced[row.id] = { to: next.id, keys: keys };
        focusRow(next);
      }
    }
  });

  // no answer to swap in (server error, network): the row is as it was, and says so
  document.addEventListener("htmx:afterRequest", function (event) {
    var row = rowOf(event.detail.elt);
    if (!row || !row.isConnected || !saving(row)) { return; }
    row.classList.remove("is-saving");
    row.removeAttribute("aria-busy");
    delete advanced[row.id];
    if (event.detail.failed) {
      var cell = row.querySelector(".decision-cell");
      if (cell && !cell.querySelector(".js-not-saved")) {
        var note = document.createElement("div");
        note.className = "alert alert-danger py-1 px-2 small mb-2 js-not-saved";
        note.setAttribute("role", "alert");
        note.textContent = "Not saved: the server did not answer. Try again.";
        cell.insertBefore(note, cell.firstChild);
      }
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

  // a comment being typed in a row about to be swapped is kept: the one in focus, or one a refusal did not save
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!event.detail.shouldSwap || !target || !target.classList || !target.classList.contains("item-row")) { return; }
    var area = target.querySelector(".revoke-form textarea"), box = area && area.closest("details");
    if (!area || !box || !box.open) { return; }
    var focused = area === document.activeElement;
    var refused = event.detail.xhr.status >= 400;
    var sentAsIs = !refused && target.dataset.sentComment === area.value;
    if ((focused && !sentAsIs) || (refused && area.value.trim() && area.value !== area.defaultValue)) {
      kept[target.id] = { value: area.value, start: area.selectionStart, end: area.selectionEnd, focused: focused };
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var row = event.target;
    if (!row || !row.classList || !row.classList.contains("item-row")) { return; }
    var keep = kept[row.id], moved = advanced[row.id];
    delete kept[row.id];
    delete advanced[row.id];
    if (keep) {
      var box = row.querySelector("details.revoke-box"), area = box && box.querySelector("textarea");
      if (area) {
        box.open = true;
        area.value = keep.value;
        if (keep.focused && (focusLost() || row.contains(document.activeElement))) {
          area.focus({ preventScroll: true });
          try { area.setSelectionRange(keep.start, keep.end); } catch (e) { /* not a text field any more */ }
        }
      }
    }
    // a refused save: back to its row, unless the reviewer has pressed a key since the keyboard moved on
    var was = moved && current();
    if (moved && row.querySelector(".alert") && moved.keys === keys && was && was.id === moved.to
        && !typing(document.activeElement)) {
      focusRow(row);
    }
    // the focus went with the replaced row: put it on the keyboard row (never take it from anywhere else)
    if (focusLost()) { focusRow(current() || row); }
  });

  // settling puts the server's class back on a swapped row: mark the keyboard row again (the row holding the
  // focus, else the last one marked)
  document.addEventListener("htmx:afterSettle", function () {
    setBars(document);
    var row = rowOf(document.activeElement) || (kbRow && document.getElementById(kbRow));
    if (row && row.classList.contains("item-row") && row !== current()) { markRow(row); }
  });

  document.addEventListener("DOMContentLoaded", function () { setBars(document); });
  if (document.readyState !== "loading") { setBars(document); }
})();
