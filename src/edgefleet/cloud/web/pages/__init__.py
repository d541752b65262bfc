"""Page modules: each exposes ``router`` and optionally ``NAV``; ``make_web_router`` finds them all."""
