"""Who is asking and which trace it belongs to: the request id, the session id and the
trace context of the work in progress (``context``), spans (``tracing``), with
OpenTelemetry when the ``otel`` extra is installed and turned on (``otel``), and the
redaction of tokens in what leaves the process, log lines and spans (``redaction``).

Beside the stack like ``metrics``: every layer may record into it, it imports none
of them.
"""
