"""Errors of the LLM backends: one clear line naming the backend and URL (never a key), and an exit code.

Which is which:

- :class:`LLMUnavailable` (69): connection refused, DNS failure, or 429/5xx/529 still failing after the
  retries the deadline allowed.  A front end may fall back to LLM-free handling.
- :class:`LLMAuthError` (77): 401 or 403: the API key is missing, wrong or not allowed.
- :class:`LLMNotFound` (67): 404: wrong base URL or unknown model.
- :class:`LLMProtocolError` (76): the server answered something that is not the protocol: a malformed
  body, a truncated stream, a tool call whose arguments are not a JSON object, a json-mode answer that
  does not fit the action schema.
- :class:`LLMTimeout` (75): the call's deadline passed before the answer was complete.
- :class:`LLMCancelled` (130): the caller's cancel event was set.

All derive from :class:`LLMError`, a :class:`~machina.exitcodes.MachinaError`.
"""

from __future__ import annotations

from machina.exitcodes import ExitCode, MachinaError


class LLMError(MachinaError):
    """Any failure of a model call."""

    exit_code = ExitCode.UNAVAILABLE


class LLMUnavailable(LLMError):
    exit_code = ExitCode.UNAVAILABLE


class LLMAuthError(LLMError):
    exit_code = ExitCode.NOPERM


class LLMNotFound(LLMError):
    exit_code = ExitCode.NOTFOUND


class LLMProtocolError(LLMError):
    exit_code = ExitCode.PROTOCOL


class LLMTimeout(LLMError):
    exit_code = ExitCode.TEMPFAIL


class LLMCancelled(LLMError):
    exit_code = ExitCode.INTERRUPTED
