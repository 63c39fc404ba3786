"""The Starlette app: health, webhooks, the simulator, and (later) the staff dashboard."""
