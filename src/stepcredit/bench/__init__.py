"""The benchmark: a matrix of (environment, method, seed) training runs and its statistics."""
