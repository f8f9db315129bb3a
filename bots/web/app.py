"""The personal web page: each person sees, searches, corrects and erases what is kept about them.

Server-rendered HTML (Jinja2, autoescaped) and no JavaScript: every action is a plain form, so it
works with a keyboard alone and on a phone. Who is signed in comes only from the session cookie;
the person is resolved from the session's account on every request, so an account linked later
sees the joined data and one unlinked later sees only its own. Every change is a POST that must
carry the session's CSRF token (and, when the browser sends one, a same-site Origin), and every
id a form sends is checked to belong to that person before anything happens.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from bots.web import pages
from bots.web.sessions import COOKIE, SECURE_COOKIE, Session, Sessions
from core import own_data
from core.config import Settings
from core.memory.export import export_person
from core.memory.records import Person
from core.signin import SignInLinks

if TYPE_CHECKING:
    from core.assistant import Assistant

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # a sign-in link's path never leaves in a Referer
    "Cache-Control": "no-store",
}

# typed request keys where aiohttp has them (newer releases warn about plain strings)
_Key: Any = getattr(web, "RequestKey", None)
SESSION: Any = _Key("session", Session) if _Key else "session"
PERSON: Any = _Key("person", Person) if _Key else "person"

_env = Environment(loader=PackageLoader("bots.web", "templates"), autoescape=select_autoescape(["html"]))


class AdapterVersions(Protocol):
    """A person's adapter versions and rollback, as the workers keep them (workers/training.py);
    handed in by the composition (app/run.py), since bots/ does not import workers."""

    def list_versions(self, person_id: str, settings: Settings) -> list[dict[str, Any]]: ...
    def rollback(self, person_id: str, settings: Settings, to: str | None = None) -> Any: ...


class WebPage:
    """The page's handlers, bound to one assistant (its store, rules and sign-in links)."""

    def __init__(
        self, assistant: Assistant, settings: Settings, links: SignInLinks, adapter_versions: AdapterVersions
    ) -> None:
        self.a = assistant
        self.settings = settings
        self.links = links
        self.adapter_versions = adapter_versions
        self.sessions = Sessions(settings.web_session_seconds)
        self.cookie = SECURE_COOKIE if settings.web_cookies_secure else COOKIE
        base = urlsplit(settings.web_base_url)
        self.origin = f"{base.scheme}://{base.netloc}"

    # -- plumbing -----------------------------------------------------------------------------

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        body = _env.get_template(name).render(**context)
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    def message(self, title: str, text: str, status: int, session: Session | None = None) -> web.Response:
        return self.render(
            "message.html", status, title=title, text=text, session=session, csrf=session and session.csrf
        )

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Security headers everywhere; the session and CSRF checks before every handler."""
        try:
            response = await self._guarded(request, handler)
        except web.HTTPException as exc:  # aiohttp's own 404/405
            exc.headers.update(HEADERS)
            raise
        response.headers.update(HEADERS)
        return response

    async def _guarded(self, request: web.Request, handler: Any) -> web.StreamResponse:
        public = request.path.startswith(("/signin", "/static/")) or request.path == "/signed-out"
        session = self.sessions.get(request.cookies.get(self.cookie))
        request[SESSION] = session
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin not in (self.origin, f"{request.scheme}://{request.host}"):
                log.warning("web form from another site refused", path=request.path)
                return self.message("Refused", "That form came from another site.", 403)
            if not public:
                form = await request.post()
                if session is None or not session.csrf_ok(form.get("csrf")):
                    log.warning("web form without a valid CSRF token refused", path=request.path)
                    return self.message(
                        "Refused",
                        "This form has expired or did not come from your page. Go back, reload and try again.",
                        403,
                    )
        if public:
            return await handler(request)
        if session is None:
            return self.render("signed_out.html", 401, session=None)
        person = await asyncio.to_thread(self._person_of, session)
        if person is None:  # erased, or the account left: the session ends with it
            self.sessions.end(request.cookies.get(self.cookie))
            return self.render("signed_out.html", 401, session=None)
        request[PERSON] = person
        return await handler(request)

    def _person_of(self, session: Session) -> Person | None:
        store = self.a.store
        person_id = store.person_for(session.who.platform, session.who.account)
        return store.person(person_id) if person_id is not None else None

    def _done(self, request: web.Request, notice: str, to: str = "/") -> web.Response:
        request[SESSION].notices.append(notice)
        return _redirect(to)

    def _context(self, request: web.Request, **more: Any) -> dict[str, Any]:
        session: Session = request[SESSION]
        notices, session.notices = session.notices, []
        return {
            "session": session,
            "csrf": session.csrf,
            "notices": notices,
            "person": request[PERSON],
            **more,
        }

    # -- signing in and out -------------------------------------------------------------------

    async def signin_page(self, request: web.Request) -> web.Response:
        """The link only shows a button: a chat app's link preview must not use it up."""
        token = request.match_info["token"]
        if not self.links.valid(token):
            return self._expired()
        return self.render("signin.html", token=token, session=None)

    def _expired(self) -> web.Response:
        return self.message(
            "This link no longer works",
            "Sign-in links work once and only for a few minutes. Send /web to me in a direct chat for a new one.",
            410,
        )

    async def signin(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        who = self.links.redeem(str(form.get("token", "")))
        if who is None:
            log.info("web sign-in refused: unknown, used or expired link")
            return self._expired()
        self.sessions.end(request.cookies.get(self.cookie))  # never keep a session id from before
        sid, _ = self.sessions.start(who)
        log.info("web sign-in", platform=who.platform)
        response = _redirect("/")
        response.set_cookie(
            self.cookie,
            sid,
            max_age=int(self.settings.web_session_seconds),
            path="/",
            httponly=True,
            secure=self.settings.web_cookies_secure,
            samesite="Lax",
        )
        return response

    async def signout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.end(request.cookies.get(self.cookie))
        response = _redirect("/signed-out")
        response.del_cookie(self.cookie, path="/")
        return response

    async def signed_out(self, request: web.Request) -> web.Response:
        return self.render("signed_out.html", session=None)

    # -- memories -----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        filters = pages.Filters.read(request.query)
        view = await asyncio.to_thread(pages.overview, self.a, request[PERSON], filters)
        return self.render(
            "memories.html", **self._context(request, view=view, filters=filters, kinds=pages.KINDS)
        )

    async def forget(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        memory_ids, turn_ids = form.getall("memory", []), form.getall("turn", [])
        person: Person = request[PERSON]
        if not memory_ids and not turn_ids:
            return self._done(request, "Nothing was selected, so nothing was forgotten.")
        memories, turns, complete = await asyncio.to_thread(
            pages.owned, self.a, person.person_id, [str(i) for i in memory_ids], [str(i) for i in turn_ids]
        )
        if not complete:  # a crafted or stale id: touch nothing
            log.warning("web forget refused: ids that are not this person's", person=person.person_id)
            return self.message(
                "Not found",
                "Some of those items are not among your data (maybe already forgotten). Nothing was changed.",
                404,
                request[SESSION],
            )
        await asyncio.to_thread(
            own_data.forget,
            self.a.store,
            self.a.forgetting,
            person.person_id,
            turns,
            [m.id for m in memories],
        )
        n = len(memories) + len(turns)
        return self._done(
            request, f"Forgotten: {n} item{'s' if n != 1 else ''}. It's gone from my storage too."
        )

    async def edit_page(self, request: web.Request) -> web.Response:
        memory = await asyncio.to_thread(self._current_memory, request)
        if memory is None:
            return self._not_yours(request)
        return self.render("edit.html", **self._context(request, memory=memory, text=memory.text, error=None))

    async def edit(self, request: web.Request) -> web.StreamResponse:
        memory = await asyncio.to_thread(self._current_memory, request)
        if memory is None:
            return self._not_yours(request)
        text = str((await request.post()).get("text", ""))
        person: Person = request[PERSON]
        try:
            await asyncio.to_thread(
                own_data.edit_memory, self.a.store, self.a.forgetting, person.person_id, memory.id, text
            )
        except own_data.EditError as exc:  # the form comes back with what they wrote
            return self.render(
                "edit.html", 400, **self._context(request, memory=memory, text=text, error=str(exc))
            )
        return self._done(request, "Saved. The old text is kept in the memory's history.")

    def _current_memory(self, request: web.Request):
        person: Person = request[PERSON]
        wanted = request.match_info["memory_id"]
        return next((m for m in self.a.store.memories_of(person.person_id) if m.id == wanted), None)

    def _not_yours(self, request: web.Request) -> web.Response:
        return self.message(
            "Not found", "That memory is not among your current memories.", 404, request[SESSION]
        )

    # -- settings, export, erasure ------------------------------------------------------------

    async def pause(self, request: web.Request) -> web.StreamResponse:
        paused = request.path == "/pause"
        await asyncio.to_thread(own_data.set_paused, self.a.store, request[PERSON], paused)
        if paused:
            return self._done(
                request, "Paused: I won't remember new messages until you resume. I still answer."
            )
        return self._done(request, "Resumed: I'll remember what you tell me again.")

    async def export(self, request: web.Request) -> web.Response:
        person: Person = request[PERSON]
        data = await asyncio.to_thread(export_person, self.a.store, person.person_id)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        body = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode()
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="confidante-export-{stamp}.json"'},
        )

    async def forget_me_page(self, request: web.Request) -> web.Response:
        return self.render("forget_me.html", **self._context(request, error=None))

    async def forget_me(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if form.get("confirm") != "yes":
            return self.render(
                "forget_me.html",
                400,
                **self._context(request, error="Tick the box to confirm; nothing was erased."),
            )
        person: Person = request[PERSON]
        await asyncio.to_thread(self.a.forgetting.forget_person, person.person_id)
        self.sessions.end(request.cookies.get(self.cookie))
        response = self.message(
            "Erased",
            "Done. I've erased everything about you. If you write again, I start from nothing.",
            200,
        )
        response.del_cookie(self.cookie, path="/")
        return response

    # -- adapters -----------------------------------------------------------------------------

    async def adapters(self, request: web.Request) -> web.Response:
        person: Person = request[PERSON]
        rows = await asyncio.to_thread(self.adapter_versions.list_versions, person.person_id, self.settings)
        return self.render("adapters.html", **self._context(request, rows=rows))

    async def rollback(self, request: web.Request) -> web.StreamResponse:
        person: Person = request[PERSON]
        version = str((await request.post()).get("version", "")) or None
        try:
            chosen = await asyncio.to_thread(
                self.adapter_versions.rollback, person.person_id, self.settings, version
            )
        except ValueError as exc:
            return self._done(request, str(exc).replace("; see `confidante adapter list`", ""), "/adapters")
        return self._done(request, f"Now serving {chosen.version}.", "/adapters")


def _redirect(to: str) -> web.Response:
    return web.Response(status=303, headers={"Location": to})


def make_app(
    assistant: Assistant,
    settings: Settings,
    adapter_versions: AdapterVersions,
    links: SignInLinks | None = None,
) -> web.Application:
    page = WebPage(assistant, settings, links or assistant.commands.signin, adapter_versions)
    app = web.Application(middlewares=[page.guard], client_max_size=256 * 1024)
    app.router.add_get("/signin/{token}", page.signin_page)
    app.router.add_post("/signin", page.signin)
    app.router.add_post("/signout", page.signout)
    app.router.add_get("/signed-out", page.signed_out)
    app.router.add_get("/", page.index)
    app.router.add_post("/forget", page.forget)
    app.router.add_get("/memories/{memory_id}/edit", page.edit_page)
    app.router.add_post("/memories/{memory_id}/edit", page.edit)
    app.router.add_post("/pause", page.pause)
    app.router.add_post("/resume", page.pause)
    app.router.add_get("/export", page.export)
    app.router.add_get("/forget-me", page.forget_me_page)
    app.router.add_post("/forget-me", page.forget_me)
    app.router.add_get("/adapters", page.adapters)
    app.router.add_post("/adapters/rollback", page.rollback)
    app.router.add_static("/static/", STATIC)
    return app
