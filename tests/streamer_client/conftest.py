"""The client tests' live stack is the session fixture ``live_stack`` of
tests/fixtures/live.py (bench/stack.py starts it on first use and always stops it)."""
