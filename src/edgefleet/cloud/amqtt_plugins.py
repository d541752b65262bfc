"""amqtt plugins that enforce the controller's ``passwd`` and ``acl`` files (``broker_auth``).

``FleetAuthPlugin`` refuses anonymous clients, wrong passwords, a device whose client id
is not its username (no session take-over of another device) and a last will outside the
device's own ``status`` topic (amqtt publishes wills without a topic check).
``FleetTopicPlugin`` checks every publish, subscribe and delivery against the ACL. Both
re-read the files when they change (checked at most every 0.2 s, and at once after
``EmbeddedBroker.reload()``), so enrolling or revoking a device takes effect without a
restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from ..protocols import status_topic
from .broker_auth import ACL_FILE, PASSWD_FILE, AuthRules

log = logging.getLogger(__name__)


class RulesCache:
    """The parsed files of one auth directory, re-read when their mtime or size changes."""

    _by_dir: dict[str, RulesCache] = {}
    _lock = threading.Lock()

    def __init__(self, directory: Path):
        self.dir = directory
        self._rules = AuthRules()
        self._stamp: tuple[int, ...] | None = None
        self._checked = 0.0

    @classmethod
    def for_dir(cls, directory: str | Path) -> RulesCache:
        key = str(Path(directory).resolve())
        with cls._lock:
            cache = cls._by_dir.get(key)
            if cache is None:
                cache = cls._by_dir[key] = RulesCache(Path(key))
            return cache

    def _stat(self) -> tuple[int, ...]:
        out: list[int] = []
        for name in (PASSWD_FILE, ACL_FILE):
            try:
                st = (self.dir / name).stat()
                out += [st.st_mtime_ns, st.st_size, st.st_ino]
            except OSError:
                out += [0, 0, 0]
        return tuple(out)

    def rules(self, *, force: bool = False) -> AuthRules:
        now = time.monotonic()
        if not force and now - self._checked < 0.2:
            return self._rules
        self._checked = now
        stamp = self._stat()
        if force or stamp != self._stamp:
            try:
                passwd = (self.dir / PASSWD_FILE).read_text()
                acl = (self.dir / ACL_FILE).read_text()
            except OSError as exc:
                log.error("broker auth files in %s unreadable (%s): refusing everyone", self.dir, exc)
                self._rules, self._stamp = AuthRules(), stamp
                return self._rules
            self._rules, self._stamp = AuthRules.parse(passwd, acl), stamp
        return self._rules


class FleetAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        auth_dir: str = ""

    def _cache(self) -> RulesCache:
        return RulesCache.for_dir(self._get_config_option("auth_dir", ""))

    async def authenticate(self, *, session: Any) -> bool | None:
        rules = self._cache().rules()
        username = getattr(session, "username", None)
        password = getattr(session, "password", None)
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if not rules.authenticate(username, password):
            log.warning("broker refused client %r: %s", getattr(session, "client_id", None),
                        "anonymous" if not username else f"bad credentials for {username!r}")
            return False
        if username in rules.controllers:
            return True
        if getattr(session, "client_id", None) != username:
            log.warning("broker refused device %r connecting with client id %r", username, session.client_id)
            return False
        if getattr(session, "will_flag", False) and session.will_topic != status_topic(str(username)):
            log.warning("broker refused device %r: last will on %r", username, session.will_topic)
            return False
        return True


class FleetTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        auth_dir: str = ""

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        if session is None or not topic:
            return False
        rules = RulesCache.for_dir(self._get_config_option("auth_dir", "")).rules()
        username = getattr(session, "username", None)
        if username not in rules.passwords:  # revoked since it connected
            return False
        if action == Action.PUBLISH:
            allowed = rules.may_publish(username, topic)
        elif action == Action.SUBSCRIBE:
            allowed = rules.may_subscribe(username, topic)
        else:
            allowed = rules.may_receive(username, topic)
        if not allowed and action != Action.RECEIVE:
            log.warning("broker refused %s on %r for %r", getattr(action, "value", action), topic, username)
        return allowed
