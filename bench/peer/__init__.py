"""The peer: a python-socketio server with ``AsyncRedisManager`` doing paylive's work in
the simplest way that framework allows, and the client side the load generator uses to
measure it."""
