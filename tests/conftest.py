pytest_plugins = ["tests.peers"]
