"""Assembles the parts into running processes: ``up``, ``serve`` and ``worker``.

Nothing here handles a request: it reads the settings, starts the KMS (in
development), the broker, the workers and the front doors in order, and stops
them in reverse. Neither the frontend nor the worker imports this package.
"""
