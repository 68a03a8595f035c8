"""The desk console's server side (streams/api/desk.py) without a broker: routes, assets, texts."""

from __future__ import annotations

import re

from streams.domain.signals import SIGNAL_TYPES


def test_every_signal_type_has_one_plain_sentence() -> None:
    from streams.api.desk import SIGNAL_HELP

    assert sorted(SIGNAL_HELP) == sorted(SIGNAL_TYPES)
    for kind, text in SIGNAL_HELP.items():
        assert text.endswith(".") and ". " not in text, kind  # one sentence
        assert ":" in text, f"{kind}: says what it means, then what to do"


def test_windows_in_the_sentences_follow_the_settings() -> None:
    from streams.api.desk import SIGNAL_HELP, _duration
    from streams.app import settings

    assert (_duration(1800), _duration(86400), _duration(1209600)) == ("30 min", "24 h", "14 days")
    assert _duration(90) == "90 s"
    assert _duration(settings.duplicate_order_window_s) in SIGNAL_HELP["DUPLICATE_ORDER"]
    assert _duration(settings.complaint_unresolved_s) in SIGNAL_HELP["COMPLAINT_UNRESOLVED"]


def test_the_page_and_its_assets_are_shipped_and_need_no_download() -> None:
    from streams.api.desk import FILES

    assert {"index.html", "desk.css", "desk.js"} <= set(FILES)
    for name, body in FILES.items():
        text = body.decode()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), name
    page = FILES["index.html"].decode()
    assert 'src="/desk/static/desk.js"' in page and 'href="/desk/static/desk.css"' in page
    assert page.count("<label") >= 2 and 'aria-live="polite"' in page


def test_the_worker_serves_the_console_routes() -> None:
    import streams.api.desk  # noqa: F401  (registers the routes)
    from streams.app import app

    routes = {route.resource.canonical for route in app.web.web_app.router.routes()}
    assert {
        "/desk",
        "/desk/",
        "/desk/static/{name}",
        "/desk/config.json",
        "/desk/customers/{customer_id}/events",
    } <= routes


def test_server_sent_events_are_framed_as_the_spec_says() -> None:
    from streams.api.desk import desk_config, sse
    from streams.app import settings

    assert sse("state", b'{"a":1}', "7") == b'event: state\nid: 7\ndata: {"a":1}\n\n'
    assert sse("ping", b"{}") == b"event: ping\ndata: {}\n\n"
    assert desk_config()["stale_after_s"] == settings.desk_stale_s


def test_the_worker_serves_post_commands_next_to_the_query_api() -> None:
    import streams.api.commands  # noqa: F401  (registers the route)
    from streams.app import app

    routes = {
        (route.method, route.resource.canonical)
        for route in app.web.web_app.router.routes()
        if route.resource is not None
    }
    assert any(path == "/customers/{customer_id}/commands" for _, path in routes), routes
