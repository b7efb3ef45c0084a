"""The copy engine: the one place that owns concurrency and moves images.

``resolve`` (names → a copy plan) and ``copy`` (every layer exactly once, verified, into a
destination).  It talks to transports only through the contracts of
``hatchway.transports.base``.
"""
