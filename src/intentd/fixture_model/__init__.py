"""The deterministic stand-in for the LLM: scenarios (pure), the OpenAI wire format, the HTTP server.

It is the test double for the model, never for OpenCode: the real daemon talks to `server.py`, the
in-process fake (`intentd_dev.oc_fake`) asks `scenarios.respond` directly.
"""
