"""The engine: everything that moves bytes and owns concurrency.

``resolve`` (names → images), ``staging`` (exactly-once verified fetches), ``writer`` (the
ordered writer), ``output`` (atomic files) and ``save`` (the task group tying them together).
"""
