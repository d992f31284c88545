"""The one way anything talks to a running daemon: ``Client`` over this OS's ``endpoint``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokend import paths
from tokend.errors import DaemonNotRunning, TokendError
from tokend.ipc.protocol import RELOAD, SIGN_IN_CHANGED, STATUS, STOP, TOKEN, Endpoint, TokenAnswer, read_answer

if sys.platform == "win32":  # each OS's endpoint, where it exists
    from tokend.ipc.winpipe import PipeEndpoint
else:
    from tokend.ipc.unix import UnixEndpoint


def endpoint(config_path: Path) -> Endpoint:
    """The endpoint of the daemon for ``config_path`` on this OS."""
    if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI job
        return PipeEndpoint(paths.pipe_name(config_path))
    else:
        return UnixEndpoint(paths.socket_path(config_path))


class Client:
    """Requests to the daemon of one config, one connection each."""

    def __init__(self, config_path: Path, timeout: float = 10.0, where: Endpoint | None = None) -> None:
        self.endpoint = where or endpoint(config_path)
        self.timeout = timeout  # seconds for connecting and for each read

    def status(self) -> dict[str, Any]:
        return self.request({"op": STATUS})

    def token(self, target: str | None) -> TokenAnswer:
        r = self.request({"op": TOKEN, "target": target})
        return TokenAnswer(r["token"], float(r["expires_on"]), r["target"])

    def reload(self) -> None:
        self.request({"op": RELOAD})

    def stop(self) -> None:
        self.request({"op": STOP})

    def sign_in_changed(self, identity: str | None) -> None:
        self.request({"op": SIGN_IN_CHANGED, "identity": identity})

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request; DaemonNotRunning when none answers, TokendError with the daemon's line and exit code
        when it refuses."""
        stream = self.endpoint.connect(self.timeout)
        try:
            stream.sendall(json.dumps(payload).encode() + b"\n")
            data = read_answer(stream)
        except OSError as e:
            raise TokendError(
                f"the tokend daemon at {self.endpoint.describe()} did not answer: {e.strerror or type(e).__name__}"
            ) from None
        finally:
            stream.close()
        try:
            reply = json.loads(data)
        except ValueError:
            raise TokendError(
                f"the tokend daemon at {self.endpoint.describe()} closed the connection without an answer; see its log"
            ) from None
        if not reply.get("ok"):
            err = TokendError(reply.get("error", "the daemon refused the request"))
            err.exit_code = int(reply.get("exit_code", 1))
            raise err
        result: dict[str, Any] = reply["result"]
        return result


def ask(config_path: Path, call: Callable[[Client], Any]) -> Any:
    """``call(client)`` on the daemon of ``config_path``; with none, the error says what to do — or, when the config
    file itself is missing, names it."""
    try:
        return call(Client(config_path))
    except DaemonNotRunning as e:
        if not config_path.exists():
            # start-up time: `tokend token` (the hand-off's fast path) must not pay for the config module
            from tokend.config import load

            load(config_path)  # raises the ConfigError naming the missing file
        raise TokendError(f"{e}; start it with `tokend run --config {config_path}`") from None
