"""`make bench`: each stage's throughput beside a plain PyTorch loop
(`bench`, with the shared harness in `loops` and the workloads in
`workloads`), and the paper grid's time estimated from those rates
(`grid_estimate`)."""
