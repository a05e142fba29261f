"""Performance benchmarks of kwta-robust (run each with ``python -m benchmarks.<name>``; see README.md here)."""
