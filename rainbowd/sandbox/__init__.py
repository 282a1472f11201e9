"""Not part of rainbowd: the sandbox is the rainbowd-sandbox package (sandbox/rainbowd_sandbox).

Only `python -m rainbowd.sandbox.buildcache` lives here, the name tests/cluster/build calls the
build cache by; the script's text is part of the cache's key, so the name stays. Never installed
(pyproject.toml excludes it) and never copied into the image (.dockerignore).
"""
