"""Routing: which replica of a deployment serves the next attempt.

Owns: choosing a replica with the host's view of load (``router``: round
robin by weight, least loaded, power of two choices, latency EWMA, each
decided and counted in one step on the shared segment's ``ReplicaLoad``),
sticky sessions (``sticky``: session keys, binding and re-pinning in the host's
session table, and ``SessionDirectory``, the seam to bindings beyond the host)
and prefix affinity (``prefix``: prompt block hashes, the host's prefix index,
the cost of a replica). A replica a route answers with is counted on it: the
caller gives the count back (``DeploymentRouter.finish`` / ``release``).

Must not touch: HTTP, providers, breakers, admission. It is told which replicas
to avoid (tried, circuit open) and what happened to bindings it let go of is
told to a ``SessionEvents`` the caller gives it (metrics, backend sessions).
"""
from .directory import LocalSessionDirectory, SessionDirectory
from .prefix import BLOCK_BYTES, prompt_hashes
from .router import DeploymentRouter, SessionEvents
from .sticky import MAX_SESSION_ID_BYTES, session_id_problem, session_key

__all__ = ["BLOCK_BYTES", "DeploymentRouter", "LocalSessionDirectory", "MAX_SESSION_ID_BYTES", "SessionDirectory",
           "SessionEvents", "prompt_hashes", "session_id_problem", "session_key"]
