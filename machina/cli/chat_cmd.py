"""``machina chat``: talk to the agent (machina.agent) from a terminal, a pipe or a script.

A terminal gets a line editor (prompt_toolkit: history, Esc Enter for a new line, Ctrl-C cancels the
running turn, Ctrl-D quits) with streamed answers and y/n/e approval prompts.  Anything else is read a line
per message, and nobody is there to approve: every approval is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import click

from machina.agent import Limits, Session, distill_rules, recent_experiences
from machina.agent import events as ev
from machina.agent.always import AlwaysRules
from machina.agent.approval import ApprovalRequest
from machina.agent.config_change import ConfigProposal
from machina.agent.driver import BACKEND_VARIABLES, SHARED_VARIABLES, ExternalDriver
from machina.agent.goals import EngineGoals
from machina.autonomic import activity
from machina.cli.chat_render import JsonRenderer, TextRenderer, approval_text
from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.config import Config, ConfigError
from machina.exitcodes import ExitCode
from machina.ipc.jsonlines import ServiceUnavailable
from machina.llm import open_backend
from machina.root import Root, open_root
from machina.toolhost.client import ToolhostClient, ToolhostError

EXIT_BY_REASON = {
    ev.ANSWERED: ExitCode.OK,
    ev.UNAVAILABLE: ExitCode.UNAVAILABLE,
    ev.MODEL_ERROR: ExitCode.PROTOCOL,
    ev.CANCELLED: ExitCode.INTERRUPTED,
}
SLASH_HELP = """commands:
  /help     this list
  /status   backend, model, history and tool counts, toolhost state
  /tools    the tools the model may use, by permission
  /always   the standing approvals ("always" answers), numbered
  /forget N remove standing approval N
  /clear    forget this conversation
  /stop     cancel the running turn (Ctrl-C does the same while a turn runs)
  /quit     leave (Ctrl-D too)"""
POLL_S = 0.2
ASK_CHOICES = "allow it? [y]es once / [a]lways this exact call / [n]o / [e]dit the inputs / [?] show"
ONCE_NOTE = "a yes lets exactly this call run once; the same call later asks again\n"


def default_history_file() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "machina", "chat_history")


@click.command()
@click.option("--once", "once", metavar="TEXT", help="Send one message, print the answer and exit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event on standard output.")
@click.option(
    "--backend", type=click.Choice(["oai_compat", "anthropic", "ollama"]), help="Override MACHINA_CHAT_BACKEND."
)
@click.option("--model", metavar="NAME", help="Override the backend's model variable.")
@click.option(
    "--socket", "socket_path", metavar="PATH", help="Toolhost socket (default: in MACHINA_ROOT's runtime dir)."
)
@click.option(
    "--history-file",
    metavar="PATH",
    default=None,
    help="Line-editor history (default: $XDG_STATE_HOME/machina/chat_history; empty: none).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log model and tool calls on standard error.")
@root_option
def chat(
    once: str | None,
    as_json: bool,
    backend: str | None,
    model: str | None,
    socket_path: str | None,
    history_file: str | None,
    verbose: bool,
    root: str | None,
) -> int:
    """Talk to the agent: the model answers, using Machina's tools through the toolhost.

    Reads messages from the terminal (a line editor) or, when standard input is not a terminal, one
    message per line. Lines starting with / are commands (/help lists them). Tools that need approval
    are asked about on the terminal (y: allow this one call, n: refuse, e: edit its inputs); without a
    terminal, or after MACHINA_PERMISSION_TIMEOUT_S, the answer is no.

    Exit status: 0 answered, 69 no model reachable and no LLM-free rule applied, 76 the model's answer
    was unusable, 130 cancelled, 1 the turn stopped without an answer (limits), 78 bad configuration.
    With several messages, the status of the last one that was not answered.
    """
    cfg = bootstrap("machina chat", overrides_from(root), verbose=verbose)
    if not verbose:
        # the events already say what went wrong; log lines would only interleave with the conversation
        logging.getLogger().setLevel(max(logging.ERROR, logging.getLogger().level))
    machina_root = open_root(cfg)
    driver = chat_driver(cfg, machina_root.path)
    try:
        model_backend: Any = open_backend(cfg, backend=backend, model=model)
    except ConfigError:
        if driver is None:
            raise
        model_backend = None  # the driver has its own settings; nothing in-process needs a model

    def reopen(overrides: dict[str, Any]) -> Any:
        return open_backend(
            cfg,
            backend=overrides.get("backend", backend),
            model=overrides.get("model", model),
            temperature=overrides.get("temperature"),
        )

    client = ToolhostClient(
        socket_path or machina_root.socket_path("toolhost"), timeout=float(cfg["MACHINA_TOOLHOST_TIMEOUT"])
    )
    human = sys.stdin.isatty()
    interactive = human and sys.stdout.isatty() and once is None and not as_json
    session = Session(
        model_backend,
        client,
        Limits.from_config(cfg),
        memory_dir=machina_root.memory,
        rules=distill_rules(recent_experiences(machina_root.memory)),
        stream=sys.stdout.isatty() and not as_json,
        driver=driver,
        backend_factory=reopen if driver is None else None,
        goals=goal_engine(cfg, machina_root, client) if driver is not None else None,
        always=AlwaysRules.under(machina_root.state),
        approver=f"machina chat (uid {os.getuid()})",
    )
    app = ChatApp(session, client, JsonRenderer() if as_json else TextRenderer(), human, machina_root.state)
    try:
        if once is not None:
            return app.handle(once)
        if interactive:
            return app.repl(history_file if history_file is not None else default_history_file())
        return app.lines(sys.stdin)
    finally:
        if session.backend is not None:
            session.backend.close()
        client.close()


def goal_engine(cfg: Config, machina_root: Root, client: ToolhostClient) -> EngineGoals | None:
    """The goal engine a driver's goal actions run in, as ``machina run`` builds it (None: packs broken)."""
    from machina.engine import Engine
    from machina.manifests.tools import ManifestError

    try:
        return EngineGoals(Engine.from_config(cfg, machina_root, client))
    except ManifestError as exc:
        logging.getLogger(__name__).error("goals are not available in this chat: %s", exc)
        return None


def chat_driver(cfg: Config, root_path: str) -> ExternalDriver | None:
    """The external chat driver MACHINA_CHAT_CMD names, or None (the in-process driver)."""
    argv = cfg["MACHINA_CHAT_CMD"]
    if not argv:
        return None
    names = (*SHARED_VARIABLES, *(n for names in BACKEND_VARIABLES.values() for n in names))
    settings = {name: str(cfg[name]) for name in names if cfg[name] is not None}
    return ExternalDriver(argv, settings, cfg["MACHINA_CHAT_TIMEOUT_MS"] / 1000.0, cwd=root_path)


class ChatApp:
    def __init__(
        self, session: Session, client: ToolhostClient, renderer: Any, human: bool, state_dir: str | None = None
    ) -> None:
        self.session = session
        self.state_dir = state_dir  # where a message marks user activity for machina-autonomic
        self.client = client
        self.renderer = renderer
        self.human = human
        self.status = int(ExitCode.OK)
        self.quit = False
        self._interrupted = False

    # --- front ends --------------------------------------------------------------------------------------

    def lines(self, stream: Iterable[str]) -> int:
        for line in stream:
            text = line.strip()
            if text:
                self.handle(text)
            if self.quit:
                break
        return self.status

    def repl(self, history_file: str) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()

        @keys.add("escape", "enter")
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        history: Any = InMemoryHistory()
        if history_file:
            os.makedirs(os.path.dirname(os.path.abspath(history_file)), mode=0o700, exist_ok=True)
            history = FileHistory(history_file)
        prompt: PromptSession[str] = PromptSession(history=history, key_bindings=keys)
        described = self.session.describe()
        click.echo(
            f"machina chat: {described['backend']} {described['model']}; /help for commands, Ctrl-D to leave", err=True
        )
        while not self.quit:
            try:
                text = prompt.prompt("you> ").strip()
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line
            except EOFError:
                break
            if text:
                self.handle(text)
        return ExitCode.OK

    # --- one message --------------------------------------------------------------------------------------

    def handle(self, text: str) -> int:
        if self.state_dir is not None:
            activity.touch(self.state_dir)  # a person is here: the autonomic engine ends a burst, waits for idle
        if text.startswith("/"):
            self.command(text)
            return self.status
        done = self.turn(text)
        code = int(EXIT_BY_REASON.get(done.reason, ExitCode.FAILURE))
        if code != ExitCode.OK:
            self.status = code
        return code

    def turn(self, text: str) -> ev.Done:
        self._interrupted = False
        turn = self.session.send(text)  # from here on, cancel() applies to this turn
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            for event in turn:
                self.renderer.show(event)
                if isinstance(event, ev.ApprovalNeeded):
                    self.ask(event.request)
                if isinstance(event, ev.ConfigProposed):
                    self.confirm(event.proposal)
                if isinstance(event, ev.Done):
                    return event
        finally:
            signal.signal(signal.SIGINT, previous)
        raise AssertionError("a turn ended without its done event")

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True
        self.session.cancel()
        # Straight to the descriptor: the handler runs between two bytecodes of the main thread, which may be
        # in the middle of a write to sys.stderr itself (its buffer refuses a reentrant call).
        with contextlib.suppress(OSError):
            os.write(sys.stderr.fileno(), b"\n[cancelling this turn; Ctrl-C again to quit]\n")

    def ask(self, request: ApprovalRequest) -> None:
        """Put the request to the person at the terminal; no terminal, no answer in time, or Ctrl-C is a no."""
        sys.stderr.write(approval_text(request))
        if not self.human:
            sys.stderr.write("no one at a terminal to approve it: refused\n")
            return  # unanswered: the session records "no_human"
        while not self._interrupted:
            left = request.seconds_left()
            if left <= 0:
                sys.stderr.write("\nno answer in time: refused\n")
                return
            sys.stderr.write(
                f"allow it? [y]es once / [a]lways this exact call / [n]o / [e]dit the inputs / [?] ({left:.0f}s): "
            )
            sys.stderr.flush()
            answer = _read_line(left, lambda: self._interrupted)
            if answer is None:
                continue
            word = answer.strip().lower()
            if word in ("y", "yes"):
                request.allow_once()
                return
            if word in ("a", "always"):
                request.allow_always()
                return
            if word in ("n", "no", ""):
                request.deny()
                return
            if word in ("e", "edit"):
                edited = self._edited_inputs(request)
                if edited is not None:
                    request.allow_edited(edited)
                    return
            elif word == "?":
                sys.stderr.write(approval_text(request) + ONCE_NOTE)
        request.deny()

    def _edited_inputs(self, request: ApprovalRequest) -> dict[str, Any] | None:
        """The inputs the person types (one line of JSON); None, after saying why, when they are not usable."""
        sys.stderr.write("new inputs, as one line of JSON (the call runs once with exactly these): ")
        sys.stderr.flush()
        line = _read_line(request.seconds_left(), lambda: self._interrupted)
        try:
            inputs = json.loads(line or "")
        except ValueError as exc:
            sys.stderr.write(f"not JSON ({exc}); asking again\n")
            return None
        if not isinstance(inputs, dict):
            sys.stderr.write("inputs must be a JSON object; asking again\n")
            return None
        return inputs

    def confirm(self, proposal: ConfigProposal) -> None:
        """A model's proposal to change backend, model or temperature applies only on a person's yes."""
        sys.stderr.write(f"\nthe model proposes to change: {proposal.changes}\n")
        if not self.human:
            sys.stderr.write("no one at a terminal to confirm it: not applied\n")
            proposal.decline()
            return
        sys.stderr.write(f"apply it? [y]es / [n]o ({proposal.seconds_left():.0f}s): ")
        sys.stderr.flush()
        answer = _read_line(proposal.seconds_left(), lambda: self._interrupted)
        if answer is not None and answer.strip().lower() in ("y", "yes"):
            proposal.confirm()
        else:
            proposal.decline()

    # --- slash commands -----------------------------------------------------------------------------------

    def command(self, text: str) -> None:
        name = text.split()[0].lower()
        if name in ("/quit", "/exit"):
            self.quit = True
        elif name == "/clear":
            self.session.clear()
            self._say("conversation forgotten")
        elif name == "/stop":
            self._say("no turn is running (while one runs, Ctrl-C stops it)")
        elif name == "/status":
            self._show(self._status())
        elif name == "/tools":
            self._show(self._tools())
        elif name == "/always":
            self._show(self._always())
        elif name == "/forget":
            self._forget(text)
        elif name == "/help":
            self._say(SLASH_HELP)
        else:
            self._say(f"unknown command {name}; /help lists them")

    def _status(self) -> dict[str, Any]:
        status = self.session.describe()
        try:
            self.client.ping()
            status["toolhost"] = "running"
        except (ServiceUnavailable, ToolhostError, OSError) as exc:
            status["toolhost"] = f"unavailable: {exc}"
        return status

    def _tools(self) -> dict[str, Any]:
        try:
            self.session.toolbox.refresh()
        except (ServiceUnavailable, ToolhostError, OSError) as exc:
            return {"error": f"toolhost unavailable: {exc}"}
        grouped: dict[str, list[str]] = {}
        for tool in self.session.toolbox.tools.values():
            grouped.setdefault(tool.permission, []).append(f"{tool.aid} (tier {tool.tier})")
        return {permission: sorted(aids) for permission, aids in sorted(grouped.items())}

    def _always(self) -> dict[str, Any]:
        rules = self.session.always.rules() if self.session.always else []
        shown = [
            f"{n}: {r.aid} {json.dumps(r.inputs, sort_keys=True)[:300]} (by {r.added_by})" for n, r in enumerate(rules)
        ]
        return {"standing_approvals": shown or ["none"]}

    def _forget(self, text: str) -> None:
        words = text.split()
        if len(words) != 2 or not words[1].isdigit() or self.session.always is None:
            self._say("usage: /forget N  (N from /always)")
            return
        gone = self.session.always.remove(int(words[1]))
        self._say(f"forgot the standing approval for {gone.aid}" if gone else f"there is no rule {words[1]}")

    def _say(self, text: str) -> None:
        if isinstance(self.renderer, JsonRenderer):
            echo_json({"event": "info", "text": text})
        else:
            click.echo(text)

    def _show(self, doc: dict[str, Any]) -> None:
        if isinstance(self.renderer, JsonRenderer):
            echo_json({"event": "info", **doc})
            return
        for key, value in doc.items():
            click.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


def _read_line(timeout_s: float, stop: Callable[[], bool]) -> str | None:
    """A line from the terminal within ``timeout_s``; None when time ran out or ``stop()`` became true."""
    waited = 0.0
    while waited < timeout_s and not stop():
        ready, _, _ = select.select([sys.stdin], [], [], min(POLL_S, timeout_s - waited))
        if ready:
            return sys.stdin.readline()
        waited += POLL_S
    return None
