"""UNTRUSTED bound engine (JAX, float64). It only proposes; the checker decides."""
