"""The one base class for a caller's mistakes.

Every error whose message is meant for the client (a bad request, option, audio file, stream chunk)
derives from :class:`ClientError`. The Triton models answer exactly these with INVALID_ARG (HTTP 400) and
their message; anything else, ``ValueError`` included, is a fault of ours: logged in full, answered with
INTERNAL and a message that reveals nothing of the code. ``ClientError`` is deliberately not a
``ValueError``: a numpy shape bug deep in decoding must never read as the client's mistake.
"""

from __future__ import annotations


class ClientError(Exception):
    """The caller's mistake; the message names the problem and what is accepted instead."""
