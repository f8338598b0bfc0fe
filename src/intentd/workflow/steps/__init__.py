"""One module per step, each with its input model and a `run(input) -> output dict`."""
