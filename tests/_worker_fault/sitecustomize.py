"""Test-only, on ``PYTHONPATH`` of a listener: its decode workers meet a fault as a broken codec would.

With ``RADSERVE_TEST_WORKER_FAULT=SUFFIX`` set, a file whose path ends in SUFFIX raises an unexpected
exception (not an input error) while it is read, inside the worker: the worker then logs it, naming
the file, with its traceback to its stderr (radserve.client.flow.prepare_file), and the file gets an
``internal_error`` row. Every interpreter started with this folder on its path imports this module.
"""

import os

if fault := os.environ.get("RADSERVE_TEST_WORKER_FAULT"):
    import radserve.client.flow as flow

    _read_dataset = flow.read_dataset

    def _faulty_read_dataset(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(fault):
            raise RuntimeError(f"simulated codec fault reading {path}")
        return _read_dataset(path, *args, **kwargs)

    flow.read_dataset = _faulty_read_dataset
