"""logbridge benchmarks: `make bench` (bench.run, a real dockerd) and `make microbench` (bench.microbench)."""
