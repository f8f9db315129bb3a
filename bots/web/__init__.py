"""The personal web page (`/web` in a direct chat): see, search, correct and erase what is kept.

`serve_web` runs it inside `confidante run`; `make_app` builds it (bots/web/app.py).
"""
