"""Request store contract tests (moto and the embedded server)."""
