"""The simulated uacce accelerator: one process, a device-agnostic uacce core (``core``) and the
zstd device behind its ops table (``zip``)."""
