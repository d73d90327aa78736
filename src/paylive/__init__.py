"""paylive: payment sessions that survive timeouts, network failures and retries,
pushed live to checkout pages and admin dashboards over WebSockets."""

__version__ = "0.1.0"
