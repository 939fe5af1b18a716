"""gRPC transport of the chat API: protobuf <-> domain types, `ApiError` -> status code.

No logic lives here beyond the mapping: `ChatCore` and `FeedbackDesk` decide;
this module translates, counts each call by method and status code, and turns
anything unexpected into INTERNAL (logged) instead of a crashed server.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable

import grpc

from rlhf.inference import metrics as m
from rlhf.inference.core import Answer, ChatCore, ChatInput, SamplingRequest
from rlhf.inference.engine import Engine
from rlhf.inference.errors import ApiError, Unavailable
from rlhf.inference.feedback import FeedbackDesk, FeedbackInput
from rlhf.v1 import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"


def _chat_input(req: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> ChatInput:
    sp = req.sampling
    remaining = context.time_remaining()
    return ChatInput(
        messages=[{"role": x.role, "content": x.content} for x in req.messages],
        user_id=req.user_id,
        conversation_id=req.conversation_id,
        sampling=SamplingRequest(
            temperature=sp.temperature if sp.HasField("temperature") else None,
            top_p=sp.top_p if sp.HasField("top_p") else None,
            max_new_tokens=sp.max_new_tokens if sp.HasField("max_new_tokens") else None,
            seed=sp.seed if sp.HasField("seed") else None,
        ),
        deadline=None if remaining is None else time.monotonic() + remaining,
    )


def _response(a: Answer) -> chat_pb2.ChatResponse:
    return chat_pb2.ChatResponse(
        response_id=a.response_id, conversation_id=a.conversation_id, text=a.text,
        policy_version=a.policy_version, completion_tokens=a.completion_tokens, finish_reason=a.finish_reason,
    )


def _feedback_input(req: chat_pb2.FeedbackRequest) -> FeedbackInput:
    kind = req.WhichOneof("kind") or ""
    out = FeedbackInput(idempotency_key=req.idempotency_key, user_id=req.user_id, kind=kind)
    if kind == "thumb":
        out.response_id, out.thumb = req.thumb.response_id, int(req.thumb.thumb)
    elif kind == "comparison":
        out.comparison_id, out.chosen_response_id = req.comparison.comparison_id, req.comparison.chosen_response_id
    elif kind == "comment":
        out.response_id, out.comment = req.comment.response_id, req.comment.text
    return out


class _Call:
    """Times one call and records its method and final status code."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code = "OK"
        self.t0 = time.perf_counter()

    def done(self) -> None:
        m.REQUESTS.labels(self.method, self.code).inc()
        m.REQUEST_SECONDS.labels(self.method).observe(time.perf_counter() - self.t0)

    async def fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        """Abort the call with the status matching `exc` (always raises)."""
        if isinstance(exc, ApiError):
            self.code = exc.code
            await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
        self.code = "INTERNAL"
        log.error("unhandled error in %s", self.method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """Registered before the policy has loaded (the port opens first); UNAVAILABLE until `attach()`."""

    def __init__(self, pinned_version: int = 0) -> None:
        self.core: ChatCore | None = None
        self.desk: FeedbackDesk | None = None
        self.engine: Engine | None = None
        self.pinned_version = pinned_version

    def attach(self, core: ChatCore, desk: FeedbackDesk, engine: Engine) -> None:
        self.core, self.desk, self.engine = core, desk, engine

    def _ready(self) -> None:
        if self.engine is None:
            raise Unavailable("the policy is still loading; retry shortly")

    async def _unary(self, method: str, context, work: Callable):
        call = _Call(method)
        try:
            self._ready()
            return await work()
        except asyncio.CancelledError:
            call.code = "CANCELLED"
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status; never crashes the server
            await call.fail(context, exc)
        finally:
            call.done()

    async def Chat(self, request, context):  # noqa: N802 (gRPC method name)
        async def work():
            return _response(await self.core.chat(_chat_input(request, context)))
        return await self._unary("Chat", context, work)

    async def ChatStream(self, request, context):  # noqa: N802
        call = _Call("ChatStream")
        try:
            self._ready()
            async for c in self.core.chat_stream(_chat_input(request, context)):
                yield chat_pb2.ChatChunk(
                    response_id=c.response_id, conversation_id=c.conversation_id, text_delta=c.text_delta,
                    policy_version=c.policy_version, finished=c.finished, finish_reason=c.finish_reason,
                    completion_tokens=c.completion_tokens,
                )
        except asyncio.CancelledError:
            call.code = "CANCELLED"
            raise
        except Exception as exc:  # noqa: BLE001
            await call.fail(context, exc)
        finally:
            call.done()

    async def Compare(self, request, context):  # noqa: N802
        async def work():
            first, second, comparison_id = await self.core.compare(_chat_input(request.request, context))
            return chat_pb2.CompareResponse(first=_response(first), second=_response(second), comparison_id=comparison_id)
        return await self._unary("Compare", context, work)

    async def Feedback(self, request, context):  # noqa: N802
        async def work():
            result = await self.desk.give(_feedback_input(request))
            return chat_pb2.FeedbackResponse(feedback_id=result.feedback_id, duplicate=result.duplicate)
        return await self._unary("Feedback", context, work)

    async def PolicyInfo(self, request, context):  # noqa: N802
        async def work():
            p = self.engine.policy
            return chat_pb2.PolicyInfoResponse(
                policy_version=p.version, weights_sha256=p.sha256, model_name=p.name,
                pinned_version=self.pinned_version, loaded_at_unix_ms=p.loaded_at_unix_ms, parameters=p.parameters,
            )
        return await self._unary("PolicyInfo", context, work)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Requires `x-api-key` metadata on chat calls; health checks and reflection stay open (probes, tools)."""

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = keys

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if not details.method.startswith("/rlhf.v1.ChatService/"):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get(API_KEY_HEADER, "")
        if isinstance(given, bytes):
            given = given.decode(errors="replace")
        if any(hmac.compare_digest(given, k) for k in self.keys):
            return await continuation(details)
        handler = await continuation(details)
        method = details.method.rsplit("/", 1)[-1]
        return _deny(handler, method)


def _deny(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    async def abort(request, context):
        m.REQUESTS.labels(method, "UNAUTHENTICATED").inc()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or invalid {API_KEY_HEADER} metadata")

    async def abort_stream(request, context):
        await abort(request, context)
        yield  # pragma: no cover - never reached; makes this an async generator

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            abort_stream, handler.request_deserializer, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
