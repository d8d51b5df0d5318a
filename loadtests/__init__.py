"""Load tests (Locust) and benchmarks."""
