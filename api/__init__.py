"""The HTTP layer: Genie Flow's poll/event routes on FastAPI (arrives with the HTTP API issue)."""
