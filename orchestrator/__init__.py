"""Login-node side: sweep schema and planner, run registry, submission, journal sync, CLI ``orch``."""
