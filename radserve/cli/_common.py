"""What every verb of the command line shares: exit codes."""

from __future__ import annotations

# 0 success; 1 the run finished but some inputs failed; 2 the command could not run.
EXIT_OK, EXIT_INPUT_FAILURES, EXIT_FAILURE = 0, 1, 2
