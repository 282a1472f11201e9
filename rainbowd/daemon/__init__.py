"""`rainbowd run`: where the policy comes from (policies), one cycle's pipeline (cycles) and the
supervisor that starts the tasks and stops them in order (supervisor)."""

from rainbowd.daemon.supervisor import Daemon, SideParts, main

__all__ = ["Daemon", "SideParts", "main"]
