"""Peer servers: the straightforward aiohttp + python-zstandard services warpzip must beat."""
