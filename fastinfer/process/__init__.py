"""The process model: one supervisor, N uvloop workers sharing one socket.

Owns: binding, forking, restarting, draining, and creating/removing the
host-wide resources (shared-memory segment) around the workers' lives.
Must not touch: request handling — that is the workers' gateway and engine.
"""
from .supervisor import ListenError, Supervisor, bind_socket

__all__ = ["ListenError", "Supervisor", "bind_socket"]
