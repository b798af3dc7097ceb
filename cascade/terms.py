"""The routing vocabulary, one ``StrEnum`` each, spelled in this one place.

Members are strings (``Reason.CONFIDENT == "confident"``), so they go as they are into the log store, JSON,
metric labels and HTTP headers. The gateway, the router, the log store and the readers of the log all use
these names; nothing else spells them.
"""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """A model server of the cascade."""

    STUDENT = "student"
    TEACHER = "teacher"


class Decision(StrEnum):
    """What the router did with a request."""

    ACCEPT = "accept"  # the student's answer was returned
    ESCALATE = "escalate"  # the teacher answered instead
    BYPASS = "bypass"  # no routing: a pinned model, or a request refused or cancelled before routing


class Reason(StrEnum):
    """Why the router decided as it did; each reason implies one :class:`Decision` (:attr:`decision`)."""

    CONFIDENT = "confident"
    NOT_CONFIDENT = "not_confident"
    INVALID_TOOL_CALL = "invalid_tool_call"  # the student's tool call is not one the request allows (router.structured)
    INVALID_JSON = "invalid_json"  # the student's content is not the JSON the request's response_format asks for
    PRE_ROUTED = "pre_routed"  # the pre-generation router sent the prompt straight to the teacher
    STUDENT_DOWN = "student_down"  # the student could not answer (down, refusing the gateway, adapter missing)
    STUDENT_CONTEXT = "student_context"  # the prompt was longer than the student's context
    STUDENT_REFUSED = "student_refused"  # the student refused the request (a 4xx: e.g. it is served without tools)
    PINNED = "pinned"  # the client asked for a tier's model by name
    NOT_ROUTED = "not_routed"  # parsed and authenticated, then refused (limits, bounds) or cancelled

    @property
    def decision(self) -> Decision:
        if self is Reason.CONFIDENT:
            return Decision.ACCEPT
        if self in (Reason.PINNED, Reason.NOT_ROUTED):
            return Decision.BYPASS
        return Decision.ESCALATE

    @property
    def escalates(self) -> bool:
        """The teacher answered because the student could not be trusted or could not answer."""
        return self.decision is Decision.ESCALATE and self is not Reason.PRE_ROUTED
