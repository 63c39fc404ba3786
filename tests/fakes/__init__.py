"""Fake provider servers on 127.0.0.1 for tests that drive the real SDKs over real HTTP."""
