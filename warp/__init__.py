"""warp: a UADK-style user-space library for uacce accelerators, in Python.

Discover devices, open queues (contexts) that share this process's address space with the device
through SVA, and run compression sessions on them — or on the cpu driver when there is no device.
"""

from warp.dictionary import Dictionary
from warp.errors import (
                         DeviceLost,
                         HeapExhausted,
                         JobFailed,
                         JobTimeout,
                         NoDevice,
                         RuntimeClosed,
                         UnknownDictionary,
                         WarpError,
)
from warp.runtime import Result, Runtime
from warp.session import Compressor, Decompressor
from warp.stream import acompress_stream, compress_stream
from warp.uacce import Device, devices

__all__ = [
    "Compressor", "Decompressor", "Device", "DeviceLost", "Dictionary", "HeapExhausted", "JobFailed", "JobTimeout",
    "NoDevice", "Result", "Runtime", "RuntimeClosed", "UnknownDictionary", "WarpError", "acompress_stream",
    "compress_stream", "devices",
]
