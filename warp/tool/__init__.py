"""warp.tool: the ``uadk_tool`` analogue — command-line tools over the warp library.

:mod:`warp.tool.bench` is ``warpzip bench device`` (``uadk_tool benchmark``): device-level
throughput, latency and I/O page faults against bare python-zstandard in the same run.
:mod:`warp.tool.stats` holds its arithmetic and rendering, free of I/O so it is unit-tested.
"""
