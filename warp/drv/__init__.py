"""Drivers: the device-specific half of warp, behind the one interface in :mod:`warp.drv.base`."""
