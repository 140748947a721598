"""warp.tool: the ``uadk_tool`` analogue — command-line tools over the warp library.

:mod:`warp.tool.bench` is ``warpzip bench device`` (``uadk_tool benchmark``): device-level
throughput, latency and I/O page faults against bare python-zstandard in the same run.
:mod:`warp.tool.corpus` is the Silesia corpus both benchmarks read (this one and the HTTP one in
``bench/``), :mod:`warp.tool.units` the sizes and units they parse and print.
"""
