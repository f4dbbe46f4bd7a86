"""A loopback Telegram Bot API server speaking the real wire protocol, for tests of ``machina-telegram``.

    with FakeTelegram(token="123:abc") as tg:
        # MACHINA_TELEGRAM_API_URL=tg.api_url (".../bot"); the client appends the token and the method
        tg.user_says(chat_id=42, user_id=7, text="hello")        # queued as an update for getUpdates
        sent = tg.wait_for_message(42, lambda m: "hello" in m["text"])
        tg.press_button(chat_id=42, user_id=7, message=sent, data=sent_buttons[0]["callback_data"])

Requests are ``POST /bot<token>/<method>`` with a JSON, ``application/x-www-form-urlencoded`` (the form
python-telegram-bot sends: objects JSON-encoded in a field) or ``multipart/form-data`` body (files); answers
are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": "..."}`` as the real
server writes them.  Methods: getMe, logOut, close, deleteWebhook, setWebhook, getWebhookInfo, getUpdates
(offset confirms, ``timeout`` long-polls), sendMessage (4096 UTF-16 code units after entity parsing, HTML
checked), editMessageText ("message is not modified" for identical content), deleteMessage, sendChatAction,
answerCallbackQuery, sendDocument, setMyCommands, getMyCommands, deleteMyCommands.  A wrong token answers
401 "Unauthorized".

Scripted faults: :meth:`FakeTelegram.fail_next` answers the next call of a method with an error (429 with
``parameters.retry_after``, 400, 502...).  Everything received is kept in :attr:`FakeTelegram.calls`; messages
the bot sent or edited are in :attr:`FakeTelegram.messages` (chat id -> message id -> message).

As a program: ``python -m machina.testing.telegram_api --token TOKEN [--port 0]`` prints its API URL and
serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import html
import itertools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl

MAX_MESSAGE_UTF16 = 4096
MAX_CALLBACK_DATA_BYTES = 64
MAX_POLL_TIMEOUT_S = 50.0
#: A token of the real shape (bot id, colon, secret); tests check it never reaches a log.
TEST_TOKEN = "123456:TEST-token_abcdefghijklmnopqrstuv"  # noqa: S105
BOT_USER = {"id": 1000001, "is_bot": True, "first_name": "Machina", "username": "machina_test_bot"}
#: Form fields whose value is a JSON-encoded object or array (the Bot API decodes them the same way).
JSON_FIELDS = frozenset(
    {"reply_markup", "entities", "commands", "allowed_updates", "scope", "caption_entities", "link_preview_options"}
)
#: Tags the Bot API's HTML parse mode accepts.
HTML_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span"}
    | {"blockquote", "tg-emoji"}
)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, Telegram's unit for message lengths and entity offsets."""
    return len(text.encode("utf-16-le")) // 2


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class Call:
    """One Bot API call as received: the method and its decoded parameters."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeTelegram:
    def __init__(self, token: str = TEST_TOKEN, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[int, dict[int, dict[str, Any]]] = {}
        self.commands: list[dict[str, Any]] = []
        self.answered_callbacks: list[dict[str, Any]] = []
        self.documents: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._updates: list[dict[str, Any]] = []
        self._confirmed = 0  # every update_id below this was confirmed by an offset
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._faults: dict[str, list[ApiError]] = {}
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What MACHINA_TELEGRAM_API_URL is set to: the client appends ``<token>/<method>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/bot"

    def start(self) -> FakeTelegram:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-telegram", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()  # wakes long polls
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- what a test does: updates from users ------------------------------------------------------------

    def user_says(self, chat_id: int, user_id: int, text: str, *, chat_type: str = "private") -> dict[str, Any]:
        """A user writes ``text`` in ``chat_id``; returns the message (a leading /command gets its entity)."""
        message = self._user_message(chat_id, user_id, text, chat_type)
        self._push({"message": message})
        return message

    def user_edits(self, message: dict[str, Any], text: str) -> dict[str, Any]:
        """The author of ``message`` edits it to ``text`` (an ``edited_message`` update)."""
        edited = {**message, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        edited.update(_command_entities(text))
        self._push({"edited_message": edited})
        return edited

    def press_button(self, chat_id: int, user_id: int, message: dict[str, Any], data: str) -> str:
        """User ``user_id`` presses an inline button whose callback_data is ``data`` under the bot's
        ``message``; returns the callback query id (see :attr:`answered_callbacks`)."""
        query_id = str(next(self._callback_ids))
        shown = {k: v for k, v in message.items() if k != "reply_markup"}
        shown["chat"] = {"id": chat_id, "type": "private" if chat_id > 0 else "group"}
        self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": _user(user_id),
                    "chat_instance": f"ci{chat_id}",
                    "message": shown,
                    "data": data,
                }
            }
        )
        return query_id

    def fail_next(self, method: str, code: int = 429, description: str = "", retry_after: int | None = None) -> None:
        """The next call of ``method`` answers this error instead (429 carries ``retry_after`` seconds)."""
        if code == 429 and retry_after is None:
            retry_after = 1
        text = description or (f"Too Many Requests: retry after {retry_after}" if code == 429 else "Bad Request")
        params = {"retry_after": retry_after} if retry_after is not None else None
        with self._cond:
            self._faults.setdefault(method, []).append(ApiError(code, text, params))

    # --- what a test reads ------------------------------------------------------------------------------

    def sent_to(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages in ``chat_id``, oldest first, as they are now (edits applied)."""
        with self._cond:
            return [dict(m) for _, m in sorted(self.messages.get(chat_id, {}).items())]

    def calls_of(self, method: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    def pending_updates(self) -> int:
        with self._cond:
            return sum(1 for u in self._updates if u["update_id"] >= self._confirmed)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until ``predicate()`` is truthy (it is re-checked after every call the bot makes)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake Telegram: condition not met within {timeout} s")
                self._cond.wait(min(left, 0.2))

    def wait_for_message(
        self, chat_id: int, match: Callable[[dict[str, Any]], bool] = lambda m: True, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first of the bot's messages in ``chat_id`` that ``match`` accepts, waiting for it."""

        def found() -> dict[str, Any] | None:
            return next((m for m in self.sent_to(chat_id) if match(m)), None)

        return dict(self.wait_for(found, timeout))

    # --- used by the handler -----------------------------------------------------------------------------

    def token_ok(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.token.encode())

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        with self._cond:
            self.calls.append(Call(method, params))
            self._cond.notify_all()
            faults = self._faults.get(method)
            if faults:
                raise faults.pop(0)
        if method == "getUpdates":
            return self._get_updates(params)
        handler = _METHODS.get(method)
        if handler is None:
            raise ApiError(404, "Not Found")
        with self._cond:
            result = handler(self, params)
            self._cond.notify_all()
            return result

    def _push(self, update: dict[str, Any]) -> None:
        with self._cond:
            update["update_id"] = next(self._update_ids)
            self._updates.append(update)
            self._cond.notify_all()

    def _user_message(self, chat_id: int, user_id: int, text: str, chat_type: str) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"user{user_id}"
        else:
            chat["title"] = f"chat{chat_id}"
        message = {
            "message_id": next(self._message_ids),
            "from": _user(user_id),
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        message.update(_command_entities(text))
        return message

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = min(max(float(params.get("timeout") or 0), 0.0), MAX_POLL_TIMEOUT_S)
        deadline = time.monotonic() + timeout
        with self._cond:
            if offset > self._confirmed:  # an offset confirms every update before it; they are forgotten
                self._confirmed = offset
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while True:
                ready = [u for u in self._updates if u["update_id"] >= offset][:limit]
                left = deadline - time.monotonic()
                if ready or left <= 0 or self.stopping.is_set():
                    return json.loads(json.dumps(ready))
                self._cond.wait(min(left, 0.5))

    # --- methods (called with the lock held) -------------------------------------------------------------

    def _message(self, chat_id: Any, message_id: Any) -> dict[str, Any]:
        try:
            return self.messages[int(chat_id)][int(message_id)]
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Bad Request: message to edit not found") from None

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        text = _visible_text(params, "text")
        _check_markup(params.get("reply_markup"))
        message = {
            "message_id": next(self._message_ids),
            "from": BOT_USER,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": int(time.time()),
            "text": text,
            "raw_text": params["text"],
            "parse_mode": params.get("parse_mode"),
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages.setdefault(chat_id, {})[message["message_id"]] = message
        return _public(message)

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message(_chat_id(params), params.get("message_id"))
        text = _visible_text(params, "text")
        markup = params.get("reply_markup")
        _check_markup(markup)
        if text == message["text"] and markup == message.get("reply_markup"):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message",
            )
        message.update(text=text, raw_text=params["text"], parse_mode=params.get("parse_mode"))
        message["edit_date"] = int(time.time())
        if markup:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        return _public(message)

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message(_chat_id(params), params.get("message_id"))
        markup = params.get("reply_markup")
        _check_markup(markup)
        if markup:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        return _public(message)

    def _delete_message(self, params: dict[str, Any]) -> bool:
        chat_id = _chat_id(params)
        self._message(chat_id, params.get("message_id"))
        del self.messages[chat_id][int(params["message_id"])]
        return True

    def _send_document(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        document = params.get("document")
        if not isinstance(document, dict) or "content" not in document:
            raise ApiError(400, "Bad Request: there is no document in the request")
        caption = params.get("caption") or ""
        if utf16_len(caption) > 1024:
            raise ApiError(400, "Bad Request: message caption is too long")
        message_id = next(self._message_ids)
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": BOT_USER,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": int(time.time()),
            "document": {
                "file_name": document["filename"],
                "file_id": f"doc{len(self.documents) + 1}",
                "file_unique_id": f"u{len(self.documents) + 1}",
                "file_size": len(document["content"]),
            },
            "caption": caption,
        }
        self.documents.append({"chat_id": chat_id, **document, "caption": caption})
        self.messages.setdefault(chat_id, {})[message_id] = {**message, "text": ""}
        return message

    def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        if not params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.answered_callbacks.append(dict(params))
        return True

    def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: commands must be an array of at most 100 BotCommand")
        for command in commands:
            name = command.get("command", "") if isinstance(command, dict) else ""
            if not (1 <= len(name) <= 32) or not all(c.islower() or c.isdigit() or c == "_" for c in name):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(command.get("description", "")) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands = list(commands)
        return True


def _get_me(fake: FakeTelegram, params: dict[str, Any]) -> dict[str, Any]:
    return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}


def _true(fake: FakeTelegram, params: dict[str, Any]) -> bool:
    return True


def _send_chat_action(fake: FakeTelegram, params: dict[str, Any]) -> bool:
    _chat_id(params)
    if params.get("action") not in {"typing", "upload_document", "upload_photo", "record_voice", "find_location"}:
        raise ApiError(400, "Bad Request: wrong parameter action in request")
    return True


_METHODS: dict[str, Callable[[FakeTelegram, dict[str, Any]], Any]] = {
    "getMe": _get_me,
    "logOut": _true,
    "close": _true,
    "deleteWebhook": _true,
    "setWebhook": _true,
    "getWebhookInfo": lambda fake, params: {"url": "", "has_custom_certificate": False, "pending_update_count": 0},
    "sendMessage": FakeTelegram._send_message,
    "editMessageText": FakeTelegram._edit_message_text,
    "editMessageReplyMarkup": FakeTelegram._edit_message_reply_markup,
    "deleteMessage": FakeTelegram._delete_message,
    "sendDocument": FakeTelegram._send_document,
    "sendChatAction": _send_chat_action,
    "answerCallbackQuery": FakeTelegram._answer_callback_query,
    "setMyCommands": FakeTelegram._set_my_commands,
    "getMyCommands": lambda fake, params: list(fake.commands),
    "deleteMyCommands": _true,
}


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": f"user{user_id}", "language_code": "en"}


def _command_entities(text: str) -> dict[str, Any]:
    if not text.startswith("/"):
        return {}
    word = text.split(maxsplit=1)[0]
    return {"entities": [{"type": "bot_command", "offset": 0, "length": utf16_len(word)}]}


def _chat_id(params: dict[str, Any]) -> int:
    try:
        return int(params["chat_id"])
    except (KeyError, TypeError, ValueError):
        raise ApiError(400, "Bad Request: chat not found") from None


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in ("raw_text", "parse_mode")}


def _visible_text(params: dict[str, Any], key: str) -> str:
    """The text as a client will show it (HTML parsed), checked against the limits as the server does."""
    raw = params.get(key)
    if not isinstance(raw, str) or not raw.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    text = parse_html(raw) if str(params.get("parse_mode") or "").upper() == "HTML" else raw
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if utf16_len(text) > MAX_MESSAGE_UTF16:
        raise ApiError(400, "Bad Request: message is too long")
    return text


def _check_markup(markup: Any) -> None:
    if not markup:
        return
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in rows:
        for button in row if isinstance(row, list) else [None]:
            if not isinstance(button, dict) or not button.get("text"):
                raise ApiError(400, "Bad Request: can't parse inline keyboard button")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")


class _HtmlText(HTMLParser):
    """Parses Bot API HTML: only its tags, properly nested; collects the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_TAGS:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"')
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unmatched end tag "{tag}"')
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def parse_html(raw: str) -> str:
    """The visible text of Bot API HTML; ApiError for what the real server refuses to parse."""
    parser = _HtmlText()
    parser.feed(raw)
    parser.close()
    if parser.open:
        tag = parser.open[-1]
        raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to \"{tag}\"")
    return html.unescape("".join(parser.parts))


def _decode_params(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query))
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" and body:
        decoded = json.loads(body)
        if not isinstance(decoded, dict):
            raise ApiError(400, "Bad Request: parameters must be a JSON object")
        params.update(decoded)
        return params
    if kind == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    elif kind == "multipart/form-data":
        params.update(_multipart(content_type, body))
    for name in JSON_FIELDS & params.keys():
        if isinstance(params[name], str):
            try:
                params[name] = json.loads(params[name])
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    return params


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if filename is not None:
            fields[str(name)] = {"filename": filename, "content": payload}
        elif name:
            fields[str(name)] = payload.decode("utf-8")
    return fields


def _handler_for(fake: FakeTelegram) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_fake = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_fake: FakeTelegram

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the recorded calls are the log (and a request line carries the token)

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self._serve(self.rfile.read(length) if length else b"")

    def _serve(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        parts = path.split("/")
        if len(parts) != 3 or not parts[1].startswith("bot"):
            self._answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        token, method = parts[1][3:], parts[2]
        if not self.server_fake.token_ok(token):
            self._answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        try:
            params = _decode_params(self.headers.get("content-type", ""), body, query)
            result = self.server_fake.handle(method, params)
        except ApiError as err:
            answer: dict[str, Any] = {"ok": False, "error_code": err.code, "description": err.description}
            if err.parameters:
                answer["parameters"] = err.parameters
            self._answer(err.code, answer)
            return
        except (ValueError, UnicodeDecodeError) as exc:
            self._answer(400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"})
            return
        self._answer(200, {"ok": True, "result": result})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m machina.testing.telegram_api", description=__doc__.split("\n")[0])
    parser.add_argument("--token", required=True, help="the bot token the server accepts")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    fake = FakeTelegram(args.token, port=args.port).start()
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(fake.api_url, flush=True)
    done.wait()
    fake.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
