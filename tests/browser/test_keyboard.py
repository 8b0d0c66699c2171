"""The inbox keyboard never changes a decision by accident (issue 14, part 5).

A reviewer types at human speed (about 45 ms a key) in a real Chromium:
- `r` then a comment straight away: every letter lands in the comment box (none is taken as a shortcut),
  also while the row decided just before is being swapped by htmx;
- Ctrl+Enter saves the revoke and the keyboard is on the next undecided row, so the next `a` approves that
  row, not the revoked one;
- `a` on the revoked row asks first; Escape keeps the revoke and its comment (checked in the database),
  confirming changes it;
- a held key (auto-repeat) and keys of an IME composition decide nothing.

Every decide request the page sends is counted in the page (`window.__decides`), synchronously with the key
that caused it, so "nothing was sent" is checked without waiting.
"""

from __future__ import annotations

import re

import pytest

from attest.reviews.models import ReviewItem
from tests.reviews.factories import review_setup

PASSWORD = "correct horse battery staple"
COMMENT = "Moved to sales in june; ask jake before a rerun"  # j, k, a and r are all shortcuts outside the box

# counts decide requests as htmx sends them (an init script runs before the page's own and ignores the CSP)
COUNT_DECIDES = """
window.__decides = [];
document.addEventListener("htmx:beforeRequest", function (e) {
  // what the request sends: an Approve or Abstain button's own decision, or its comment form's
  var elt = e.detail.elt, input = elt && (elt.name === "decision" ? elt : elt.querySelector && elt.querySelector("input[name=decision]"));
  if (input) { window.__decides.push([elt.closest("tr").id, input.value]); }
});
"""


def _open_inbox(live_server, page) -> list[str]:
    with live_server.session() as s:
        setup = review_setup(s, people=3, per_person=2, password=PASSWORD)
        email = setup.manager_user.email
    page.add_init_script(COUNT_DECIDES)
    live_server.sign_in(page, email, PASSWORD)
    page.goto(live_server.url_for("/reviews"))
    ids = page.eval_on_selector_all("tr.item-row", "rows => rows.map(r => r.id)")
    assert len(ids) == 6
    return ids


def _stored(live_server, row_id: str) -> tuple[str | None, str | None, int]:
    with live_server.session() as s:
        item = s.get(ReviewItem, int(row_id.removeprefix("item-")))
        return item.decision, item.comment, item.version


def _wait_focus(page, row_id: str) -> None:
    """The document's focus is on that row (the row itself, not a field in it) and it is the keyboard row."""
    page.wait_for_function(
        "id => document.activeElement && document.activeElement.id === id"
        " && document.activeElement.classList.contains('kb-focus')", arg=row_id)


def _decides(page) -> list[list[str]]:
    return page.evaluate("window.__decides")


def _decided(page, row_id: str, decision: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(f"#{row_id}")).to_have_class(re.compile(rf"\bdecided-{decision}\b"))


@pytest.mark.browser
def test_comment_typed_right_after_r_is_saved_whole_and_a_never_silently_replaces_the_revoke(live_server, page):
    from playwright.sync_api import expect

    ids = _open_inbox(live_server, page)
    page.keyboard.press("j")
    _wait_focus(page, ids[0])

    # r, then the comment at once at human speed: the box has focus before the next key arrives
    page.keyboard.press("r")
    page.keyboard.type(COMMENT, delay=45)
    assert page.input_value(f"#{ids[0]} textarea[name=comment]") == COMMENT
    assert _decides(page) == []  # none of the letters was taken as a shortcut

    # Ctrl+Enter saves the revoke; the keyboard is on the next undecided row
    page.keyboard.press("Control+Enter", delay=45)
    _decided(page, ids[0], "revoke")
    assert _stored(live_server, ids[0])[:2] == ("revoke", COMMENT)
    _wait_focus(page, ids[1])

    # so the next `a` approves that row, and the revoke stays as it was
    page.keyboard.press("a", delay=45)
    _decided(page, ids[1], "approve")
    assert _stored(live_server, ids[1])[0] == "approve"
    revoked = _stored(live_server, ids[0])
    assert revoked[:2] == ("revoke", COMMENT)
    assert _decides(page) == [[ids[0], "revoke"], [ids[1], "approve"]]
    _wait_focus(page, ids[2])

    # back on the revoked row, `a` asks first; Escape cancels and nothing is sent
    page.keyboard.press("k", delay=45)
    page.keyboard.press("k", delay=45)
    _wait_focus(page, ids[0])
    page.keyboard.press("a", delay=45)
    dialog = page.locator("dialog.decision-confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Change revoke to approve?")
    expect(dialog).to_contain_text("This discards the comment")
    expect(dialog.locator(".js-keep")).to_be_focused()  # the default answer keeps the decision
    page.keyboard.press("j", delay=45)  # shortcuts while it asks are ignored (no moving on to approve another row)
    page.keyboard.press("a", delay=45)
    page.keyboard.press("Escape", delay=45)
    expect(dialog).to_be_hidden()
    _wait_focus(page, ids[0])
    assert len(_decides(page)) == 2
    assert _stored(live_server, ids[0]) == revoked  # decision, comment and version: untouched
    expect(page.locator(f"#{ids[0]}")).to_have_class(re.compile(r"\bdecided-revoke\b"))

    # asked again and confirmed from the keyboard (Tab to "Change", Enter), the decision changes
    page.keyboard.press("a", delay=45)
    expect(dialog).to_be_visible()
    page.keyboard.press("Tab", delay=45)
    expect(dialog.locator(".js-change")).to_be_focused()
    page.keyboard.press("Enter", delay=45)
    expect(dialog).to_be_hidden()
    _decided(page, ids[0], "approve")
    decision, comment, version = _stored(live_server, ids[0])
    assert (decision, comment) == ("approve", None) and version > revoked[2]
    assert _decides(page)[-1] == [ids[0], "approve"]


@pytest.mark.browser
def test_r_right_after_a_types_into_the_next_rows_box_while_the_approved_row_is_swapped(live_server, page):
    ids = _open_inbox(live_server, page)
    page.keyboard.press("j")
    _wait_focus(page, ids[0])

    # a, then r at once: the approval is still on its way when the comment box opens on the next row, and
    # its answer swaps the first row while the comment is being typed
    page.keyboard.press("a", delay=45)
    page.keyboard.press("r", delay=45)
    assert page.evaluate("document.activeElement.name") == "comment"
    assert page.evaluate("document.activeElement.closest('tr').id") == ids[1]
    page.keyboard.type(COMMENT, delay=45)
    _decided(page, ids[0], "approve")  # the swap came and went while typing
    assert page.input_value(f"#{ids[1]} textarea[name=comment]") == COMMENT
    page.keyboard.press("Control+Enter", delay=45)

    _decided(page, ids[1], "revoke")
    _wait_focus(page, ids[2])
    assert _stored(live_server, ids[0])[:2] == ("approve", None)
    assert _stored(live_server, ids[1])[:2] == ("revoke", COMMENT)
    assert _decides(page) == [[ids[0], "approve"], [ids[1], "revoke"]]


@pytest.mark.browser
def test_held_keys_ime_keys_and_keys_in_other_fields_decide_nothing(live_server, page):
    ids = _open_inbox(live_server, page)
    page.keyboard.press("j")
    _wait_focus(page, ids[0])

    # a held `a` (the second and third keydowns are auto-repeats) approves one row, not three
    page.keyboard.down("a")
    page.keyboard.down("a")
    page.keyboard.down("a")
    page.keyboard.up("a")
    assert _decides(page) == [[ids[0], "approve"]]
    _decided(page, ids[0], "approve")
    _wait_focus(page, ids[1])

    # keys that belong to an IME composition are never shortcuts
    sent = page.evaluate("""() => {
      const row = document.activeElement;
      for (const key of ["a", "r", "j"]) {
        row.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true, cancelable: true, isComposing: true}));
      }
      return [window.__decides.length, document.activeElement.id, !!row.querySelector("details.revoke-box[open]")];
    }""")
    assert sent == [1, ids[1], False]

    # nor are keys typed into the search box
    search = page.locator("input[name=q]")
    search.click()
    page.keyboard.type("jar", delay=45)
    assert page.evaluate("document.activeElement.name") == "q"
    assert len(_decides(page)) == 1
    assert [_stored(live_server, i)[0] for i in ids] == ["approve"] + [None] * 5


@pytest.mark.browser
def test_a_revoke_refused_because_another_tab_decided_first_keeps_the_comment_and_asks_before_replacing(
        live_server, page):
    from playwright.sync_api import expect

    ids = _open_inbox(live_server, page)
    page.keyboard.press("j")
    _wait_focus(page, ids[0])
    page.keyboard.press("r")
    page.keyboard.type(COMMENT, delay=45)

    # meanwhile the same reviewer approves that item in another tab
    other = page.context.new_page()
    other.goto(live_server.url_for("/reviews"))
    other.click(f"#{ids[0]} .js-approve")
    _decided(other, ids[0], "approve")
    approved = _stored(live_server, ids[0])
    other.close()
    page.bring_to_front()

    # the revoke carries the version the page read: refused (409), the approval stands, nothing typed is lost
    page.keyboard.press("Control+Enter", delay=45)
    row = page.locator(f"#{ids[0]}")
    expect(row.locator(".alert")).to_be_visible()
    _decided(page, ids[0], "approve")
    assert _stored(live_server, ids[0]) == approved
    assert row.locator("textarea[name=comment]").input_value() == COMMENT
    _wait_focus(page, ids[0])  # back on the refused row: no key was pressed since the keyboard moved on

    # revoking it now replaces a saved decision, so it asks first
    page.keyboard.press("r", delay=45)
    expect(row.locator("textarea[name=comment]")).to_be_focused()
    page.keyboard.press("Control+Enter", delay=45)
    dialog = page.locator("dialog.decision-confirm")
    expect(dialog).to_contain_text("Change approve to revoke?")
    page.keyboard.press("Tab", delay=45)
    page.keyboard.press("Enter", delay=45)
    _decided(page, ids[0], "revoke")
    assert _stored(live_server, ids[0])[:2] == ("revoke", COMMENT)
    assert _decides(page) == [[ids[0], "revoke"], [ids[0], "revoke"]]
