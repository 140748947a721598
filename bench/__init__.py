"""Side-by-side HTTP benchmark of warpzip against the servers a user would otherwise write.

The numbers only mean something next to each other (the machines are small and noisy), so one run
of ``python -m bench`` starts every server in turn on the same bodies and load, and reports each
one's throughput as a ratio to the best peer.
"""
