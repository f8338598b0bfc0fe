"""The deterministic stand-in for the LLM: scenarios (pure) and an OpenAI-compatible server."""
