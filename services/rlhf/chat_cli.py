"""`rlhf chat --target HOST:PORT`: an interactive terminal client of the chat API.

Type a message to chat (the answer streams in, followed by the policy
version that wrote it). Commands:

  /up, /down          thumb the last answer
  /comment TEXT       comment on the last answer
  /compare [TEXT]     two candidate answers for TEXT (or your next message); pick 1 or 2
  /info               the serving policy: version, weights sha256, pin
  /new                start a new conversation
  /help, /quit

Each line of input is one turn; the conversation so far is sent along, so
the assistant sees the context (start a `/new` one when it gets too long).
"""
from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

from rlhf.v1 import chat_pb2, chat_pb2_grpc

HELP = __doc__.split("Commands:", 1)[1].split("Each line", 1)[0].rstrip()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the inference service")
    p.add_argument("--user", default=f"cli-{uuid.uuid4().hex[:8]}", help="pseudonymous user id sent with each call")
    p.add_argument("--api-key", default="", help="sent as x-api-key metadata when the service requires one")
    p.add_argument("--tls-ca", default="", help="PEM CA certificate: connect with TLS and verify the server")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (server default when unset)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus mass (server default when unset)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit (server default when unset)")
    p.add_argument("--system", default="", help="optional system message opening each conversation")


class ChatSession:
    """One user's conversation with the service; `handle(line)` runs one line of input."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, user: str, sampling: chat_pb2.SamplingParams,
                 out: Callable[[str], None] = print, ask: Callable[[str], str] = input,
                 metadata: tuple = (), system: str = "") -> None:
        self.stub, self.user, self.sampling = stub, user, sampling
        self.out, self.ask, self.metadata, self.system = out, ask, metadata, system
        self.new_conversation()

    def new_conversation(self) -> None:
        self.conversation_id = uuid.uuid4().hex
        self.messages = [chat_pb2.Message(role="system", content=self.system)] if self.system else []
        self.last_response_id = ""

    def _request(self, text: str) -> chat_pb2.ChatRequest:
        msgs = self.messages + [chat_pb2.Message(role="user", content=text)]
        return chat_pb2.ChatRequest(messages=msgs, sampling=self.sampling, user_id=self.user,
                                    conversation_id=self.conversation_id)

    def handle(self, line: str) -> bool:
        """Run one input line; False means quit."""
        line = line.strip()
        if not line:
            return True
        command, _, rest = line.partition(" ")
        try:
            if command in ("/quit", "/exit"):
                return False
            if command == "/help":
                self.out(HELP)
            elif command == "/new":
                self.new_conversation()
                self.out("(new conversation)")
            elif command == "/info":
                self.info()
            elif command in ("/up", "/down"):
                self.thumb(command == "/up")
            elif command == "/comment":
                self.comment(rest)
            elif command == "/compare":
                self.compare(rest or self.ask("compare> "))
            elif command.startswith("/"):
                self.out(f"unknown command {command}; /help lists them")
            else:
                self.chat(line)
        except grpc.RpcError as exc:
            self.out(f"[{exc.code().name}] {exc.details()}")
        return True

    def chat(self, text: str) -> None:
        parts, last = [], None
        for chunk in self.stub.ChatStream(self._request(text), metadata=self.metadata):
            parts.append(chunk.text_delta)
            self.out_inline(chunk.text_delta)
            last = chunk
        self.out_inline("\n")
        answer = "".join(parts)
        self.messages += [chat_pb2.Message(role="user", content=text), chat_pb2.Message(role="assistant", content=answer)]
        self.last_response_id = last.response_id
        self.out(f"  [policy v{last.policy_version} · {last.completion_tokens} tokens · {last.finish_reason}]")

    def out_inline(self, text: str) -> None:
        if self.out is print:
            sys.stdout.write(text)
            sys.stdout.flush()
        elif text.strip():
            self.out(text)

    def compare(self, text: str) -> None:
        if not text.strip():
            self.out("nothing to compare")
            return
        pair = self.stub.Compare(chat_pb2.CompareRequest(request=self._request(text)), metadata=self.metadata)
        for n, a in ((1, pair.first), (2, pair.second)):
            self.out(f"--- {n} (policy v{a.policy_version}) ---\n{a.text}")
        choice = self.ask("which is better? [1/2, enter to skip] ").strip()
        if choice not in ("1", "2"):
            self.out("(no choice recorded)")
            return
        chosen = pair.first if choice == "1" else pair.second
        self._feedback(comparison=chat_pb2.ComparisonFeedback(
            comparison_id=pair.comparison_id, chosen_response_id=chosen.response_id))
        self.messages += [chat_pb2.Message(role="user", content=text), chat_pb2.Message(role="assistant", content=chosen.text)]
        self.last_response_id = chosen.response_id
        self.out(f"(recorded: {choice} preferred)")

    def thumb(self, up: bool) -> None:
        if not self.last_response_id:
            self.out("no answer to rate yet")
            return
        self._feedback(thumb=chat_pb2.ThumbFeedback(
            response_id=self.last_response_id, thumb=chat_pb2.THUMB_UP if up else chat_pb2.THUMB_DOWN))
        self.out("(thanks: thumb " + ("up" if up else "down") + ")")

    def comment(self, text: str) -> None:
        if not self.last_response_id or not text.strip():
            self.out("usage: /comment TEXT, after an answer")
            return
        self._feedback(comment=chat_pb2.CommentFeedback(response_id=self.last_response_id, text=text))
        self.out("(comment recorded)")

    def _feedback(self, **kind) -> chat_pb2.FeedbackResponse:
        req = chat_pb2.FeedbackRequest(idempotency_key=uuid.uuid4().hex, user_id=self.user, **kind)
        return self.stub.Feedback(req, metadata=self.metadata)

    def info(self) -> None:
        i = self.stub.PolicyInfo(chat_pb2.PolicyInfoRequest(), metadata=self.metadata)
        pin = f", pinned to v{i.pinned_version}" if i.pinned_version else ""
        self.out(f"policy v{i.policy_version} ({i.model_name}, {i.parameters:,} parameters{pin})\n"
                 f"weights sha256 {i.weights_sha256}")


def channel_for(target: str, tls_ca: str = "") -> grpc.Channel:
    if tls_ca:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(Path(tls_ca).read_bytes()))
    return grpc.insecure_channel(target)


def run(args: argparse.Namespace) -> int:
    sampling = chat_pb2.SamplingParams()
    if args.temperature is not None:
        sampling.temperature = args.temperature
    if args.top_p is not None:
        sampling.top_p = args.top_p
    if args.max_new_tokens is not None:
        sampling.max_new_tokens = args.max_new_tokens
    metadata = (("x-api-key", args.api_key),) if args.api_key else ()
    stub = chat_pb2_grpc.ChatServiceStub(channel_for(args.target, args.tls_ca))
    session = ChatSession(stub, args.user, sampling, metadata=metadata, system=args.system)
    try:
        session.info()
    except grpc.RpcError as exc:
        print(f"cannot reach {args.target}: [{exc.code().name}] {exc.details()}", file=sys.stderr)
        return 1
    print("type a message, or /help")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            return 0
        if not session.handle(line):
            return 0
