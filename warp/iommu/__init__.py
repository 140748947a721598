"""The device side of SVA: the PASID table and translation (``mmu``), the page tables both sides
share (``pagetable``), and I/O page faults — the page request queue and its fault-handler thread
(``fault``). The process side, the heap and page table a process shares, is :mod:`warp.sva`.
"""
