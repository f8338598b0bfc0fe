"""Webhooks: signed, durable deliveries of run events to configured HTTP endpoints (docs/events.md).

endpoints.py: configuration, URL policy, signing (no DBOS, no HTTP: the shim and recipes may import it);
delivery.py: the DBOS workflow per (event, endpoint); dispatcher.py: the worker's thread that starts them.
"""
