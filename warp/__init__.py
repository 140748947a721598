"""warp: a UADK-style user-space library for uacce accelerators, in Python.

Discover devices, open queues (contexts) that share this process's address space with the device
through SVA, and run compression sessions on them — or on the cpu driver when there is no device.
"""

from warp.dictionary import Dictionary
from warp.errors import (
    ContextTooLarge,
    DeviceLost,
    HeapExhausted,
    JobFailed,
    JobTimeout,
    MixedDictionaries,
    NoDevice,
    RuntimeClosed,
    UnknownDictionary,
    WarpError,
)
from warp.result import Result
from warp.runtime import Runtime
from warp.session import Compressor, Decompressor
from warp.stream import CompressStream, DecompressStream
from warp.uacce import Device, devices

__all__ = [
    "CompressStream", "Compressor", "ContextTooLarge", "DecompressStream", "Decompressor", "Device", "DeviceLost",
    "Dictionary", "HeapExhausted", "JobFailed", "JobTimeout", "MixedDictionaries", "NoDevice", "Result", "Runtime",
    "RuntimeClosed", "UnknownDictionary", "WarpError", "devices",
]
