"""The process model: one supervisor, N uvloop workers, a listening socket per worker slot.

Owns: binding, forking, restarting, draining (``drain``: the order a worker lets
go of its listener and connections), each worker's process metrics (``probe``), the
connections a worker past its share lets go (``balance``),
and creating/removing the host-wide resources (shared-memory segment) around
the workers' lives.
Must not touch: request handling — that is the workers' gateway and engine.
"""
from .listeners import ListenError, bind_socket
from .supervisor import Supervisor

__all__ = ["ListenError", "Supervisor", "bind_socket"]
