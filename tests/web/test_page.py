"""The personal web page in a real headless Chromium: sign in from the `/web` link, read the
profile, memories with sources and history, search, filter, correct, forget, pause, export,
roll an adapter back, erase everything; and another person's session refused the first's ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.llm.adapters import AdapterStore
from core.memory.records import PRIVATE
from tests.web.conftest import shot, sign_in

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def people(server):
    """Ann (Telegram) with a move (history), a job and a group; Bob (Slack) with his own."""
    for text in ("Hi, I live in Berlin.", "I work at Acme as a designer."):
        server.say(text, "ann")
    server.consolidate("ann")
    server.say("Big news: I moved to Lisbon last month!", "ann")
    server.say("I must water the ficus on Sunday", "ann")
    server.say_in_group("/context on", "ann")
    server.say_in_group("I like climbing on weekends.", "ann")
    server.consolidate("ann")
    server.say("I live in Oslo.", "T1:U2", platform="slack")
    server.consolidate("T1:U2", platform="slack")
    return {"ann": server.person_id("ann"), "bob": server.person_id("T1:U2", "slack")}


def rows(page) -> list[str]:
    return page.locator("ul.items > li").all_inner_texts()


def memory(server, person_id: str, text: str):
    return next(m for m in server.store.memories_of(person_id, current_only=False) if m.text == text)


def test_sign_in_shows_profile_memories_sources_and_history(server, people, new_page):
    for width, name in ((390, "phone"), (1280, "desktop")):
        page = new_page(width)
        page.goto(server.link_for("ann"))
        shot(page, f"signin-{name}")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.base}/")
        assert page.get_by_role("heading", name="What I know about you").is_visible()
        profile = page.locator(".profile").inner_text()
        assert "Lives in Lisbon" in profile and "Berlin" not in profile
        lisbon = page.locator("li.item", has_text="Lives in Lisbon")
        lisbon.locator("summary").click()
        details = lisbon.locator("details").inner_text()
        assert "Big news: I moved to Lisbon" in details and "direct chat on Telegram" in details
        assert "Lives in Berlin" in details  # what it replaced, with its dates
        assert re.search(r"\d+ \w{3} \d{4} until \d+ \w{3} \d{4}", details)
        assert "You said: “I must water the ficus on Sunday”" in "\n".join(rows(page))
        assert not any("Oslo" in r for r in rows(page))  # Bob's
        shot(page, f"memories-{name}")


def test_search_uses_recall_and_filters_narrow_it(server, people, new_page):
    page = new_page()
    sign_in(server, page, "ann")
    page.get_by_role("searchbox", name="Search").fill("where do I work")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"q=where"))
    found = rows(page)
    assert page.get_by_role("heading", name=re.compile("Best matches")).is_visible()
    assert found[0].startswith("Works") and any(r.startswith("Works at Acme") for r in found[:3]), found
    shot(page, "search-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "search-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{server.base}/?kind=message")
    assert rows(page) and all("You said:" in r for r in rows(page))
    page.goto(f"{server.base}/")
    page.get_by_label("Chat", exact=True).select_option(label="Telegram group -100")
    page.get_by_role("button", name="Search").click()
    found = rows(page)
    assert found and all("Telegram group -100" in r for r in found), found
    assert any("climbing" in r for r in found)
    page.goto(f"{server.base}/?since=yesterday")
    assert "is not a date like 2026-05-31" in page.locator(".error").inner_text()
    assert any("Lisbon" in r for r in rows(page))  # the bad filter is off, nothing lost


def test_correcting_a_memory_keeps_the_old_text_in_history(server, people, new_page):
    page = new_page()
    sign_in(server, page, "ann")
    page.get_by_role("link", name="Correct: Works at Acme").click()
    page.get_by_label("What I should remember instead").fill("")
    page.get_by_role("button", name="Save").click()  # the browser's own check stops an empty one
    assert page.url.endswith("/edit")
    page.get_by_label("What I should remember instead").fill("   ")
    page.get_by_role("button", name="Save").click()
    assert "The new text is empty" in page.get_by_role("alert").inner_text()
    shot(page, "edit-error-desktop")
    page.get_by_label("What I should remember instead").fill("Works at Initech")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{server.base}/")
    assert "old text is kept" in page.get_by_role("status").inner_text()
    item = page.locator("li.item", has_text="Works at Initech")
    item.locator("summary").click()
    assert "Works at Acme" in item.locator(".history").inner_text()
    assert "I work at Acme as a designer" in item.locator(".sources").inner_text()
    old = memory(server, people["ann"], "Works at Acme")
    new = memory(server, people["ann"], "Works at Initech")
    assert not old.current and new.current and old.valid_to == new.valid_from
    assert new.source_turn_ids == old.source_turn_ids
    assert "Works at Initech" in server.store.person(people["ann"]).profile
    assert "Works at Initech" in server.say("/memory", "ann")  # the chat shows what the page shows


def test_forget_selected_items(server, people, new_page):
    page = new_page()
    sign_in(server, page, "ann")
    ficus = page.locator("li.item", has_text="water the ficus")
    ficus.get_by_role("checkbox").check()
    climbing = page.locator("li.item", has_text="Likes climbing")
    climbing.get_by_role("checkbox").check()
    page.get_by_role("button", name="Forget selected").click()
    assert "Forgotten: 2 items" in page.get_by_role("status").inner_text()
    assert not any("ficus" in r or "Likes climbing" in r for r in rows(page))
    assert any("You said: “I like climbing" in r for r in rows(page))  # its source was not ticked
    ann = people["ann"]
    assert not [t for t in server.store.turns_of(ann) if "ficus" in t.text]
    assert not [m for m in server.store.memories_of(ann, current_only=False) if "climbing" in m.text]
    page.get_by_role("button", name="Forget selected").click()  # nothing ticked: nothing lost
    assert "Nothing was selected" in page.get_by_role("status").inner_text()


def test_pause_and_resume(server, people, new_page):
    page = new_page()
    sign_in(server, page, "ann")
    page.get_by_role("button", name="Pause remembering").click()
    assert "Remembering is paused" in page.locator("#paused-state").inner_text()
    assert server.store.person(people["ann"]).settings.paused
    assert "Remembering is paused for you" in server.say("/help", "ann")
    page.get_by_role("button", name="Resume remembering").click()
    assert not server.store.person(people["ann"]).settings.paused


def test_export_downloads_everything_of_this_person_only(server, people, new_page):
    page = new_page()
    sign_in(server, page, "ann")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export").click()
    assert re.fullmatch(r"confidante-export-\d{8}-\d{6}\.json", download.value.suggested_filename)
    data = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    texts = [m["text"] for m in data["memories"]]
    assert "Lives in Lisbon" in texts and "Lives in Berlin" in texts
    assert any("Big news" in t["text"] for t in data["turns"])
    assert "Oslo" not in json.dumps(data)
    assert [(a["platform"], a["platform_user_id"]) for a in data["accounts"]] == [("telegram", "ann")]


def test_another_persons_session_is_refused_the_first_persons_ids(server, people, new_page):
    page = new_page()
    sign_in(server, page, "T1:U2", platform="slack")
    assert any("Lives in Oslo" in r for r in rows(page))
    assert not any("Lisbon" in r for r in rows(page))
    lisbon = memory(server, people["ann"], "Lives in Lisbon")
    [turn] = [t for t in server.store.turns_of(people["ann"]) if "Big news" in t.text]
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    response = page.goto(f"{server.base}/memories/{lisbon.id}/edit")
    assert response.status == 404
    for form in ({"memory": lisbon.id}, {"turn": turn.id}):
        response = page.request.post(f"{server.base}/forget", form={"csrf": csrf, **form})
        assert response.status == 404 and "Nothing was changed" in response.text()
    oslo = memory(server, people["bob"], "Lives in Oslo")
    both = page.request.post(  # one of his own with one of hers: nothing at all happens
        f"{server.base}/forget",
        data=f"csrf={csrf}&memory={oslo.id}&memory={lisbon.id}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert both.status == 404
    response = page.request.post(
        f"{server.base}/memories/{lisbon.id}/edit", form={"csrf": csrf, "text": "Lives in Mars"}
    )
    assert response.status == 404
    assert memory(server, people["ann"], "Lives in Lisbon").current
    assert [t.id for t in server.store.turns_by_ids([turn.id])] == [turn.id]
    assert oslo.current
    shot(page, "refused-desktop")


def test_linked_accounts_share_only_after_linking(server, people, new_page):
    server.say("I work at Globex.", "@dee:example.org", platform="matrix")
    server.consolidate("@dee:example.org", platform="matrix")
    page = new_page()
    sign_in(server, page, "T1:U2", platform="slack")
    assert not any("Globex" in r for r in rows(page))
    code = server.say("/link", "T1:U2", platform="slack").split("code is ")[1][:8]
    server.say(f"/link {code}", "@dee:example.org", platform="matrix")
    page.reload()
    assert any("Globex" in r for r in rows(page)) and any("Oslo" in r for r in rows(page))
    server.say("/unlink", "@dee:example.org", platform="matrix")
    dee = new_page()
    sign_in(server, dee, "@dee:example.org", platform="matrix")  # separated: starts fresh
    assert not any("Oslo" in r or "Globex" in r for r in rows(dee))


def test_adapter_versions_and_rollback(server, people, new_page):
    adapters = AdapterStore(server.settings)
    ann = people["ann"]
    for n, change in ((1, 0.01), (2, 0.02)):
        name, tmp = adapters.new_version_dir(ann)
        meta = {
            "status": "current",
            "created_at": f"2026-05-0{n}T10:00:00",
            "train_size": 40 * n,
            "scores": {"heldout_nll_before": 2.5, "heldout_nll_after": 2.0, "general_ppl_change": change},
        }
        adapters.commit_version(ann, name, tmp, meta)
        adapters.set_current(ann, name)
    page = new_page()
    sign_in(server, page, "ann")
    page.get_by_role("link", name="Personal model").click()
    table = page.get_by_role("table").inner_text()
    assert "v0001" in table and "v0002" in table and "+2.0%" in table and "2.500 → 2.000" in table
    shot(page, "adapters-desktop")
    page.get_by_role("button", name="Use v0001").click()
    assert "Now serving v0001" in page.get_by_role("status").inner_text()
    assert adapters.current_name(ann) == "v0001"


def test_keyboard_reaches_the_content_and_every_field_has_a_label(server, people, new_page):
    page = new_page(390)
    sign_in(server, page, "ann")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
             .filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling


def test_forget_me_needs_confirmation_and_erases_everything(server, people, new_page):
    server.say("I live in Quito.", "erin")
    server.consolidate("erin")
    erin = server.person_id("erin")
    page = new_page(390)
    sign_in(server, page, "erin")
    page.get_by_role("link", name="Forget me").click()
    shot(page, "forget-me-phone")
    page.get_by_role("button", name="Erase everything").click()
    assert "nothing was erased" in page.get_by_role("alert").inner_text()
    assert server.store.memories_of(erin)
    page.get_by_label("Yes, erase everything about me").check()
    page.get_by_role("button", name="Erase everything").click()
    assert page.get_by_role("heading", name="Erased").is_visible()
    assert server.store.person_for("telegram", "erin") is None
    assert not server.store.memories_of(erin, current_only=False) and not server.store.turns_of(erin)
    page.goto(f"{server.base}/")
    assert page.get_by_role("heading", name="You are not signed in").is_visible()
    assert server.store.memories_of(people["ann"], visibilities=[PRIVATE])  # others untouched
