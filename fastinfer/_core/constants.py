"""Named constants of the shared-memory core: the one place their values are written.

Owns: every number that crosses the boundary between the compiled core
(``shm.pyx`` + ``atomics.h``), its pure-Python reference (``ref/shm.py``) and
the Python packages that call them (``limits``, ``breaker``, ``routing``, ...):
priorities, admission results, breaker states and check results, backend
session states, routing policies, lease ids and the hard limits of the layout; and the
fields the body readers (``bodies.pyx`` and ``ref/bodies.py``) walk for a prompt.

``atomics.h`` repeats the values C needs as ``FI_*`` macros (C cannot import
Python). ``shm.pyx`` checks at import that the two agree and refuses to load
otherwise, and ``tests/core/test_constants.py`` checks it too, so they cannot
drift. Python code imports the names from here (or from ``shm``, which
re-exports them), never writes the numbers.

Must not touch: anything but plain ints and tuples.
"""
from __future__ import annotations

# ---------------------------------------------------------------- token estimates
CHARS_PER_TOKEN = 4       # a prompt's estimate before the upstream counts it: four characters a token

# ---------------------------------------------------------------- priorities (admission queue)
CRITICAL, HIGH, NORMAL, BACKGROUND = 0, 1, 2, 3
PRIORITY_NAMES = ("critical", "high", "normal", "background")   # index = priority

# ---------------------------------------------------------------- Admission.enqueue() results
GRANTED_NOW = -2          # a slot was free: the caller owns it now
QUEUE_FULL = -1           # the queue is at capacity
TICKET_BITS = 24          # ticket = (generation << TICKET_BITS) | entry index

# ---------------------------------------------------------------- breakers
CLOSED, OPEN, HALF_OPEN = 0, 1, 2          # Breaker.state
BREAKER_STATE_NAMES = ("closed", "open", "half_open")
ALLOWED, REJECTED, PROBE = 0, 1, 2         # Breaker.check()

# ---------------------------------------------------------------- backend sessions (SessionTable)
SESSION_NONE, SESSION_OPENING, SESSION_OPEN, SESSION_CLOSING = 0, 1, 2, 3
SESSION_STATE_NAMES = ("none", "opening", "open", "closing")

# ---------------------------------------------------------------- routing (ReplicaLoad.pick_and_start)
ROUND_ROBIN, LEAST_LOADED, POWER_OF_TWO, LATENCY = 0, 1, 2, 3
ROUTING_POLICIES = {"round_robin": ROUND_ROBIN, "least_loaded": LEAST_LOADED,
                    "power_of_two": POWER_OF_TWO, "latency": LATENCY}
NO_REPLICA = -1           # pick_and_start(): every replica is avoided or unhealthy
EWMA_ALPHA = 0.2          # weight of a new latency sample in the replica's EWMA

# ---------------------------------------------------------------- host leases (Segment.lease)
LEASE_SESSION_REAPER = 0
LEASE_HEALTH_PROBER = 1
LEASE_CLUSTER_SYNC = 2
LEASE_STATE_FLUSH = 3
LEASE_NAMES = ("session_reaper", "health_prober", "cluster_sync", "state_flush")
N_LEASES = 8              # leases in every segment: the named ones above and spares

# ---------------------------------------------------------------- limits of the layout
MAX_WORKERS = 4096
MAX_REPLICAS = 64         # per deployment: replica sets are 64-bit masks (avoid, health, prefix)
MAX_POOL = (1 << 24) - 1  # max_concurrency + queue_capacity of one deployment (24-bit entry index)
MAX_SPAN_NS = 1 << 60     # longest duration the core stores (~36 years): longer ones are clamped
SPEND_BITS = 48           # spend word: (period << 48) | micro-USD
MAX_SPEND = (1 << SPEND_BITS) - 1      # micro-USD in one period (~$281M), saturating
MAX_PERIOD = (1 << (64 - SPEND_BITS)) - 1
COST_SCALE = 10 ** 9      # a cost counter word counts nano-USD: integer atomics, no float drift
SESSION_STRIPE = 64       # session slots per stripe (one robust mutex each; LRU window)
PREFIX_WAYS = 8           # prefix entries per set (eviction window)

# ---------------------------------------------------------------- a prompt's text (``bodies.walked_chars``)
PROMPT_FIELDS = ("system", "messages", "contents", "systemInstruction", "prompt", "input")   # of a body
TEXT_KEYS = ("text", "content", "parts", "thinking")        # under which a part's text is

__all__ = [name for name in dict(globals()) if name.isupper()]
