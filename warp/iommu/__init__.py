"""SVA: process address spaces shared with the device, per-PASID page tables, I/O page faults.

``space`` is the process side (the "mm": heap memory and its page table), ``mmu`` the device side
(PASID table and translation), ``fault`` the page request queue and its fault-handler thread.
"""
