"""What every `portal-agent` command shares: the agent half of the JSON API (`Portal`),
its errors and exit codes, and safe printing. Standard library only."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNAUTHORIZED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
HTTP_TIMEOUT_SECONDS = 10
MAX_BACKOFF_SECONDS = 30  # longest pause between retries while the portal is away


class AgentError(Exception):
    exit_code = EXIT_ERROR


class UnauthorizedError(AgentError):  # 401: fatal, whatever the mode
    exit_code = EXIT_UNAUTHORIZED


class UnreachableError(AgentError):  # connection refused, DNS, timeout
    exit_code = EXIT_UNREACHABLE


class UsageError(AgentError):  # found out after parsing (e.g. nothing on stdin)
    exit_code = EXIT_USAGE


class AnswerError(AgentError):
    """An answer `Portal.call` does not pass on: the status, the portal's error `code`
    and `message` (None when the body has no error object) and the whole body."""

    def __init__(self, text: str, *, status: int, body) -> None:
        super().__init__(text)
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.code, self.message = error_of(body)


def error_of(body) -> tuple[str | None, str | None]:
    """The portal's error body `{"error": {"code", "message"}}` as (code, message)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else None,
            message if isinstance(message, str) else None)


def say(text: str = "") -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    print(f"portal-agent: {text}", file=sys.stderr, flush=True)


def shown(value) -> str:
    """Text from the portal, safe for a terminal (no escape sequences)."""
    return "".join(c if c.isprintable() or c == "\n" else " " for c in str(value or ""))


def one_line(value) -> str:
    """Text from the portal as one line, safe for a terminal."""
    return " ".join(shown(value).split())


class Portal:
    """The agent half of the JSON API. `call` returns (status, body) for 2xx, 404, 409
    and 410; anything else raises an AgentError with the portal's own message."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + "/api/v1" + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            status, body = exc.code, _json(exc.read())
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            reason = getattr(reason, "strerror", None) or reason
            raise UnreachableError(f"cannot reach the portal at {self.url}: {reason}") from None
        _code, message = error_of(body)
        if status == 401:
            raise UnauthorizedError(f"the portal refused the device token (401): "
                                    f"{message or 'unknown or revoked token'}")
        if status in (404, 409, 410):
            return status, body
        raise AnswerError(f"{method} {path} failed with HTTP {status}: "
                          f"{message or 'unexpected answer'}", status=status, body=body)

    def report_state(self, locked: bool, user: str | None) -> None:
        self.call("PUT", "/agent/state", {"locked": locked, "logged_in_user": user})

    def prompts(self) -> list[dict]:
        return self.poll()[0]

    def poll(self) -> tuple[list[dict], list[dict]]:
        """(open prompts, sessions the portal asks this device to end)."""
        _status, body = self.call("GET", "/agent/prompts")
        prompts = body.get("prompts") if isinstance(body, dict) else None
        if not isinstance(prompts, list):
            raise AgentError("the portal's prompt list was not understood")
        ends = body.get("end_sessions") or []
        if not isinstance(ends, list):
            raise AgentError("the portal's list of sessions to end was not understood")
        return prompts, [e for e in ends if isinstance(e, dict)
                         and isinstance(e.get("id"), int) and not isinstance(e["id"], bool)]

    def end_session(self, session_id: int) -> tuple[int, dict]:
        return self.call("POST", f"/agent/sessions/{session_id}/end")

    def decide(self, prompt_id: int, decision: str, number: int | None = None
               ) -> tuple[int, dict]:
        payload: dict = {"decision": decision}
        if number is not None:
            payload["number"] = number
        return self.call("POST", f"/agent/prompts/{prompt_id}", payload)


def _json(raw: bytes):
    try:
        return json.loads(raw or b"{}")
    except ValueError:  # not JSON (a proxy's error page, a wrong --url)
        return {}
