"""`python -m rainbowd.sandbox.buildcache`, as tests/cluster/build runs it (with the checkout on
PYTHONPATH, before anything is installed): runs sandbox/rainbowd_sandbox/buildcache.py, which
needs the standard library only. Run by its path, not imported: rainbowd imports nothing from
the sandbox package.
"""

import runpy
from pathlib import Path

if __name__ == "__main__":
    module = Path(__file__).resolve().parents[2] / "sandbox" / "rainbowd_sandbox" / "buildcache.py"
    runpy.run_path(str(module), run_name="__main__")
