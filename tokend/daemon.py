"""The daemon's state and queries: the refreshers (one per identity in use), the sink workers (one per sink kind),
the running config, and what status, IPC and the metrics see of them (``snapshot``).

``Daemon`` is built from a config and the builders it uses for identities and sinks (``build_identity``,
``build_sink``: tests pass fakes and drive ``apply``, ``status`` and ``handle`` in-process). It starts no service of
its own: ``tokend.runtime`` owns the loop, the IPC server, the watchers, the proxy, the health endpoint, signals and
the instance lock, and tells the daemon when to start its refreshers and workers.

A changed config (file watcher, SIGHUP or ``tokend reload``) is parsed and checked on the side, then swapped in,
one reload at a time: ``reload_mod.plan`` says what changes, ``apply`` builds and checks the new sinks (a bad one
refuses it all), takes the lock and carries the plan out; identities whose settings did not change keep their
refresher and token. The services that follow the config (the proxy's listeners, the health endpoint) are told
after the swap through the followers the runtime registered.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

from tokend import adopt as adopt_mod
from tokend import config as config_mod
from tokend import envfile, identities, ipc, notify, paths, principal, sinks
from tokend import reload as reload_mod
from tokend import status as status_mod
from tokend.clock import SYSTEM, Clock
from tokend.config import Config, IdentityConfig, Listen
from tokend.errors import ConfigError, SinkUnavailable, TokendError
from tokend.refresh import Policy
from tokend.refresher import Refresher, TokenSource
from tokend.sinks import Entry, Sink, pgpass
from tokend.sinkworker import SinkWorker, Watches
from tokend.snapshot import IdentityView, ProxyView, SinkView, Snapshot, TargetView

log = logging.getLogger("tokend.daemon")
EMPTY_CONFIG_WAIT = 1.0  # seconds an empty config file gets to be written (an editor saving in place) on a reload

IdentityBuilder = Callable[[IdentityConfig, Clock], TokenSource]
SinkBuilder = Callable[[str, Any, str], Sink]
Follower = Callable[[reload_mod.Plan, Config], None]  # told of each accepted config change, after the swap


class ProxyState(Protocol):
    """What the daemon reads of the proxy for its snapshot."""

    def status(self, target: str) -> dict[str, Any] | None: ...


class Daemon:
    def __init__(
        self,
        config: Config,
        clock: Clock = SYSTEM,
        build_identity: IdentityBuilder = identities.build,
        build_sink: SinkBuilder = sinks.build,
        stop: threading.Event | None = None,
    ) -> None:
        self.clock = clock
        self.build_identity = build_identity
        self.build_sink = build_sink
        self.owner = paths.config_id(config.path)
        self.started_at = clock.now()
        self.config = config
        self.policy = Policy()  # apply sets it from the config
        self.config_error: str | None = None
        self.refreshers: dict[str, Refresher] = {}
        self.workers: dict[str, SinkWorker] = {}
        self.proxy: ProxyState | None = None  # the local proxy's listeners, once the runtime started them
        self.observing: Listen | None = None  # where the health endpoint serves, as the runtime set it
        self.stop_reason = "stopped"
        self._followers: list[Follower] = []
        self._lock = threading.RLock()
        self._reload_lock = threading.Lock()  # one reload at a time, whoever asked
        self._refreshing = False  # refreshers started (a reload's new ones start at once)
        self._writing = False  # sink workers started (likewise)
        self._watches: Watches | None = None
        self._stop = stop or threading.Event()
        self.reloads: Counter[str] = Counter()  # accepted, refused
        self.env: envfile.Applied | None = None  # what the environment file set (start: `tokend run`)
        self.apply(config)

    # -- what the sinks and IPC see -------------------------------------------------------------------------------
    def entries(self, kind: str) -> list[Entry]:
        """The entries sink ``kind`` should hold now: every target using it whose identity has a valid token."""
        with self._lock:
            out = []
            for target in self.config.targets.values():
                refresher = self.refreshers.get(target.identity)
                token = refresher.valid_token() if refresher and kind in target.sinks else None
                # user = "@principal": the entry names the token's own principal; none while it cannot be named
                held = principal.resolved(target, token.claims) if token is not None else None
                if token is not None and held is not None:
                    out.append(Entry(held, token))
            return out

    def token_for(self, name: str | None, wait: float = 0.0) -> ipc.TokenAnswer:
        """The token for target ``name``. ``wait`` (seconds, off the event loop only): how long to wait for the
        successor of a token inside its refresh lead (``Refresher.fresh_token``), so a client that caches the
        answer (pgAdmin) is not handed a token about to expire while a fresher one is due."""
        with self._lock:
            target = self.config.target(name)
            r = self.refreshers[target.identity]
        token = r.fresh_token(wait) if wait > 0 else r.valid_token()
        if token is None:
            raise TokendError(
                f"no valid token for target {target.name!r} yet (identity {target.identity}: "
                f"{r.state}{': ' + r.last_error if r.last_error else ''}); see `tokend status`"
            )
        return ipc.TokenAnswer(token.value, token.expires_on, principal.resolve(target, token.claims).as_dict())

    def token_by_connection(
        self, host: str | None, port: str | None, user: str | None, database: str | None
    ) -> ipc.TokenAnswer:
        """The token for the target libpq would match for this connection (``pgpass.target_for``: the shared pgAdmin
        form, ``tokend token --host … --port … --user …``); UsageError when none or several differing match."""
        with self._lock:
            name = pgpass.target_for(self.config, host, port, user, database).name
        return self.token_for(name)

    def snapshot(self) -> Snapshot:
        """Everything status, IPC and the metrics report, taken at one moment (the maps copied under the lock)."""
        now = self.clock.now()
        with self._lock:
            cfg, refreshers, workers, proxy = self.config, dict(self.refreshers), dict(self.workers), self.proxy
            config_error, reloads = self.config_error, dict(self.reloads)
        tokens = {name: r.valid_token() for name, r in refreshers.items()}
        ids = []
        for name, r in refreshers.items():
            token = tokens[name]
            ids.append(
                IdentityView(
                    name=name,
                    source=r.identity.config.source,
                    state=r.state,
                    principal=token.principal if token else None,
                    remaining=token.remaining(self.clock) if token else None,
                    due_in=r.due_in(),
                    last_error=r.last_error,
                    cache=r.identity.cache,
                    requests=dict(r.requests),
                    inherited=r.inherited and token is not None,
                )
            )
        for name, ic in cfg.identities.items():  # configured, no target uses it: shown, never asked for a token
            if name not in refreshers:
                ids.append(IdentityView(name, ic.source, "unused", None, None, 0.0, None, None))
        used = {kind for t in cfg.targets.values() for kind in t.sinks}
        unread = {kind: workers[kind].sink.unread() for kind in used}  # once per sink, not per target
        targets = []
        for t in cfg.targets.values():
            token = tokens[t.identity]
            sinks_of = {kind: SinkView(**workers[kind].status_of(t.name, token, unread[kind])) for kind in t.sinks}
            view = _proxy_view(proxy.status(t.name), t.listen, paths.proxy_dir(cfg.path)) if proxy else None
            # the user clients log in as: ``user`` itself, or for "@principal" the token's principal (None: not yet)
            public = {**t.as_dict(), "resolved_user": principal.user_for(t, token.claims if token is not None else {})}
            targets.append(TargetView(t.name, public, sinks_of, view))
        return Snapshot(
            now=now,
            config=str(cfg.path),
            config_error=config_error,
            pid=os.getpid(),
            started_at=self.started_at,
            identities=tuple(ids),
            targets=tuple(targets),
            # only the sinks some target uses: a kind nobody configured does no writes worth counting
            sink_writes={kind: dict(w.writes) for kind, w in workers.items() if kind in used},
            reloads=reloads,
            proxy_running=proxy is not None,
        )

    def status(self) -> dict[str, Any]:
        """The status JSON (DESIGN.md's contract)."""
        return status_mod.to_json(self.snapshot())

    # -- config changes -----------------------------------------------------------------------------------------
    def reload(self, why: str, say_unchanged: bool = True) -> None:
        """Read the config again and swap it in; a bad one is refused and the running config keeps serving.
        ``say_unchanged``: log a reload that found nothing to change (not for ``catch_up``'s look at start)."""
        with self._reload_lock:
            try:
                self.env = envfile.apply(self.config.path, previous=self.env)  # before identities are built
                new = self._load_written()
                if new == self.config:
                    self.config_error = None
                    if say_unchanged:
                        log.info("config unchanged (%s)", why)
                    return
                self.apply(new)
            except TokendError as e:
                self.config_error = str(e)
                self.reloads["refused"] += 1
                log.error("config change refused (%s), still serving the previous one: %s", why, e)
                raise
            self.config_error = None
            self.reloads["accepted"] += 1
            log.info("config reloaded (%s): %d identities, %d targets", why, len(self.refreshers), len(new.targets))

    def _load_written(self) -> Config:
        """The config as its writer left it. An editor that saves in place truncates the file and then writes it: a
        reload landing in between finds it empty, which would retire every target. So an empty file is read again
        for up to EMPTY_CONFIG_WAIT seconds, then refused (`tokend stop` is how to hold nothing on purpose)."""
        path = self.config.path
        deadline = time.monotonic() + EMPTY_CONFIG_WAIT
        while not (data := config_mod.read(path)).strip():
            if time.monotonic() >= deadline or self._stop.wait(0.02):
                raise ConfigError(
                    path,
                    "",
                    "is empty; the running config keeps serving. Write the config back, "
                    "or stop tokend with `tokend stop`",
                )
        return config_mod.decode(data, path)

    def running(self) -> reload_mod.Running:
        """What runs now, as the reload plan sees it."""
        with self._lock:
            return reload_mod.Running(
                identities={n: r.identity.config for n, r in self.refreshers.items()},
                sinks={k: w.sink.options for k, w in self.workers.items()},
                config=self.config if self.workers else None,
                observe=self.observing,
            )

    def apply(self, new: Config) -> None:
        """Make the running parts match ``new``. Sinks are built and checked first, so a bad one refuses it all."""
        plan = reload_mod.plan(self.running(), new)
        built = self._build_sinks(new, plan)
        policy = Policy(margin=new.refresh_margin)
        with self._lock:
            self.policy = policy
            retired = self._swap_identities(new, plan, policy)
            retired_workers = self._swap_sinks(plan, built, policy)
            self.config = new
            places = {k: w.sink.place() for k, w in self.workers.items()}
        for r in retired:
            r.stop()
        self._clean(plan, retired_workers, places)
        for follow in list(self._followers):
            follow(plan, new)
        self._tokens_changed()

    def _build_sinks(self, new: Config, plan: reload_mod.Plan) -> dict[str, Sink]:
        """The sinks ``plan`` rebuilds, each checked when used (a failed check raises: the config is refused)."""
        built = {}
        for kind in plan.rebuild:
            sink = self.build_sink(kind, new.sinks[kind].options, self.owner)
            try:
                if kind in plan.check:
                    sink.check()
            except SinkUnavailable as e:  # not usable now (no keychain yet): report and retry, not fatal
                log.warning("sink %s: %s", kind, e)
            built[kind] = sink
        return built

    def _swap_identities(self, new: Config, plan: reload_mod.Plan, policy: Policy) -> list[Refresher]:
        """Under the lock: retire and start refreshers as planned; the kept ones take the new policy."""
        retired = [self.refreshers.pop(n) for n in plan.retire]
        for r in self.refreshers.values():
            r.policy = policy
        for name in plan.start:
            r = Refresher(
                self.build_identity(new.identities[name], self.clock),
                policy,
                self.clock,
                self._tokens_changed,
                self._login_required,
            )
            self.refreshers[name] = r
            if self._refreshing:
                r.start()
        return retired

    def _swap_sinks(self, plan: reload_mod.Plan, built: dict[str, Sink], policy: Policy) -> dict[str, SinkWorker]:
        """Under the lock: a worker for each rebuilt sink; returns the workers they replace, by kind."""
        retired = {k: self.workers[k] for k in built if k in self.workers}
        for w in self.workers.values():
            w.policy = policy
        for kind, sink in built.items():
            w = SinkWorker(sink, functools.partial(self.entries, kind), policy, self.clock)
            self.workers[kind] = w
            if self._writing:
                w.start(self._watches)
        return retired

    def _clean(self, plan: reload_mod.Plan, retired: dict[str, SinkWorker], places: dict[str, str]) -> None:
        """Stop the replaced workers (a write in progress finishes), then empty the places nobody writes now."""
        for w in retired.values():
            w.stop()
        for w in retired.values():
            w.join(5.0)
        for kind in plan.clean({k: w.sink.place() for k, w in retired.items()}, places):
            w = retired[kind]
            try:
                w.sink.sync([])  # what we wrote at the old place goes
            except TokendError as e:
                log.warning("could not clean %s: %s", w.sink.location(), e)

    def follow(self, follower: Follower) -> Callable[[], None]:
        """Call ``follower(plan, config)`` after every accepted config change; returns what stops it."""
        self._followers.append(follower)
        return lambda: self._followers.remove(follower)

    def _tokens_changed(self) -> None:
        for w in list(self.workers.values()):
            w.poke()

    def _login_required(self, identity: str, reason: str) -> None:
        """Once per episode: tell the person, on the desktop, what to run."""
        threading.Thread(
            target=notify.notify, args=(f"tokend: sign-in needed for {identity}", reason), name="notify", daemon=True
        ).start()

    def sign_in_changed(self, source: str | None = None, identity: str | None = None) -> None:
        """A sign-in changed outside the daemon: refresh the identities it concerns now."""
        with self._lock:
            chosen = [
                r
                for n, r in self.refreshers.items()
                if (identity is None or n == identity) and (source is None or r.identity.config.source == source)
            ]
        for r in chosen:
            r.sign_in_changed()

    # -- IPC ------------------------------------------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one IPC request (``ipc.OPS``), through the server's table of operations."""
        return ipc.dispatch(self, request)

    # -- running: the runtime calls these -------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Ask the daemon to stop (a signal, ``tokend stop``): ``wait`` returns and the runtime unwinds."""
        self.stop_reason = reason
        self._stop.set()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until a stop is asked (True) or ``timeout`` seconds passed (False); no periodic wake-up while idle."""
        return self._stop.wait(timeout)

    @property
    def refreshing(self) -> bool:
        return self._refreshing

    def adopt(self, cli_profile: Path | None = None) -> list[str]:
        """Before the refreshers start: each identity takes over the still-valid token its targets' sinks hold
        from the previous daemon (``tokend.adopt``'s rules), so a start that cannot get a token at once (a missing
        secret, Entra down, offline) keeps the logins working until that token's end. ``cli_profile``: the Azure
        CLI's azureProfile.json (whose selected account an azure-cli identity's token must be for). Returns the
        names of the identities that adopted one."""
        now = self.clock.now()
        with self._lock:
            cfg, refreshers, workers = self.config, dict(self.refreshers), dict(self.workers)
        held: dict[str, list[str]] = {}  # identity name -> token values its targets' sinks hold
        for kind, w in workers.items():
            using = [t for t in cfg.targets.values() if kind in t.sinks]
            try:
                found = w.sink.read_back(using)
            except Exception:  # a sink's read-back is a courtesy: never a reason not to start
                log.debug("sink %s: could not read back what it holds", kind, exc_info=True)
                continue
            for t in using:
                if t.name in found:
                    held.setdefault(t.identity, []).append(found[t.name])
        adopted = []
        for name, r in refreshers.items():
            ident = r.identity.config
            account = (
                adopt_mod.azure_cli_account(cli_profile, ident.tenant_id)
                if ident.source == "azure-cli" and cli_profile is not None
                else None
            )
            token = adopt_mod.choose(held.get(name, []), ident, adopt_mod.expected_principal(ident, account), now)
            if token is not None and r.adopt(token):
                adopted.append(name)
                log.info(
                    "identity %s: keeping the previous daemon's token for %s until its own arrives (valid %.0f s more)",
                    name,
                    token.principal or "?",
                    token.remaining(self.clock),
                )
        return adopted

    def start_refreshers(self) -> None:
        """Every refresher starts asking for tokens; those a reload adds start at once from now on."""
        with self._lock:
            self._refreshing = True
            for r in self.refreshers.values():
                r.start()

    def wait_first_answers(self, seconds: float) -> None:
        """Until every identity has had its first answer, a stop is asked, or ``seconds`` passed (boot clock), so a
        restart does not briefly drop still-valid entries."""
        deadline = self.clock.boot() + seconds
        for r in list(self.refreshers.values()):
            while not r.first_done.wait(0.2) and not self._stop.is_set() and self.clock.boot() < deadline:
                pass

    def start_workers(self, watches: Watches | None) -> None:
        """Every sink worker starts writing (and, with ``watches``, follows its files); so do those a reload adds."""
        with self._lock:
            self._writing, self._watches = True, watches
            for w in self.workers.values():
                w.start(watches)

    def stop_workers(self) -> None:
        """Stop writing; a write in progress finishes (5 s at most each): a file is never left half-done."""
        with self._lock:
            self._writing = False
            workers = list(self.workers.values())
        for w in workers:
            w.stop()
        for w in workers:
            w.join(5.0)

    def stop_refreshers(self) -> None:
        """Stop asking for tokens; a request in flight is abandoned after 0.5 s (its thread is a daemon thread)."""
        with self._lock:
            self._refreshing = False
            refreshers = list(self.refreshers.values())
        for r in refreshers:
            r.stop()
        for r in refreshers:
            r.join(0.5)

    def run_once(self) -> list[str]:
        """Fetch every identity once, write every sink once; what failed, one line each (empty: all of it worked)."""
        for r in self.refreshers.values():
            r.step()
        failed = [f"identity {n}: {r.last_error}" for n, r in self.refreshers.items() if r.valid_token() is None]
        for kind, w in self.workers.items():
            if not w.sync():
                failed.append(f"sink {kind}: {w.last_error}")
        for r in self.refreshers.values():
            r.identity.close()
        return failed

    def catch_up(self, why: str) -> None:
        """``reload_quietly`` without the "config unchanged" line, once the watcher runs: for a save no watcher event
        tells of, made after the start read the config and environment file and before the watch began."""
        with suppress(TokendError):
            self.reload(why, say_unchanged=False)

    def reload_quietly(self, why: str) -> None:
        """``reload`` for the watchers and SIGHUP: a refusal is logged and shown in status, not raised."""
        with suppress(TokendError):
            self.reload(why)


def _proxy_view(status: dict[str, Any] | None, listen: tuple[Listen, ...], folder: Path) -> ProxyView | None:
    """The proxy's status for one target. A listener that never bound reports no host: when the target's proxy
    has an error, such a listener is named from the config (its address, or for a Unix socket the folder it goes
    in), so a failed one reads "127.0.0.1:6432", not ":6432". Without an error an empty host still means "binding"
    (scripts wait for the host before they connect)."""
    if status is None:
        return None
    shown = [(a["host"], a["port"]) for a in status["listen"]]
    if status["last_error"]:
        shown = _named(shown, [(str(folder) if a.unix else a.host, a.port) for a in listen])
    return ProxyView(
        listen=tuple(shown),
        open=status["open"],
        total=status["total"],
        last_error=status["last_error"],
        certificate=status.get("certificate"),
        server_error=status.get("server_error"),
    )


def _named(reported: list[tuple[str, int]], configured: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """``reported`` (host, port) pairs, each empty host taken from the ``configured`` addresses of its port that
    no bound listener accounts for."""
    unnamed = list(configured)
    for pair in reported:
        if pair[0] and pair in unnamed:
            unnamed.remove(pair)
    out = []
    for host, port in reported:
        if not host:
            host = next((h for h, p in unnamed if p == port), "")
            if (host, port) in unnamed:
                unnamed.remove((host, port))
        out.append((host, port))
    return out
