"""The baselines our throughput is divided by: the naive design and the raw HTTP limit."""
