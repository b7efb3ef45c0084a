"""Transports: the places images live, each a source and, where it makes sense, a destination.

``base`` holds the contracts; ``layout`` is the local OCI image layout (hatchway's store),
``registry`` the OCI distribution API, ``archive`` the ``docker save`` archives; ``router``
sends each name to the source of its transport.  Nothing here imports the engine.
"""
