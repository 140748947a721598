"""warpzip: an asyncio HTTP compression service on a simulated uacce accelerator."""

__version__ = "0.1.0"
