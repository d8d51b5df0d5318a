"""Test-only decode hooks, imported by decode workers (``ClassifyOptions.decode_worker_imports``).

A file whose name contains ``segfault`` really crashes the worker process (a NULL read through
ctypes) inside the decode step; one whose name contains ``internal`` makes the resize step raise an
unexpected exception; one whose name contains ``hang`` never finishes decoding (a hung codec); one
whose name contains ``allocate`` asks for 4 GiB in the decode step (refused under an address-space cap).
With ``RADSERVE_TEST_WORKER_PIDS`` set, each worker appends its process id to that file when it starts
(how tests count the workers a run started).
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import radserve.client.dicom as dicom
import radserve.client.flow as flow
from radserve.client.dicom import Radiograph
from radserve.model_card import ModelCard, RenderingPolicy

_decode_dataset = dicom.decode_dataset
_wire_input = flow.wire_input


def _crashing_decode_dataset(ds: Any, path: str, policy: RenderingPolicy | None = None) -> dicom.DecodedFile:
    name = Path(path).name
    if "segfault" in name:
        ctypes.string_at(0)  # SIGSEGV, as a broken codec would
    if "hang" in name:
        time.sleep(3600)  # a codec stuck in a loop
    if "allocate" in name:
        np.ones(4 << 30, dtype=np.uint8)  # a frame table that declares far more than the file holds
    return _decode_dataset(ds, path, policy)


def _failing_wire_input(radiograph: Radiograph, card: ModelCard) -> np.ndarray | dict[str, np.ndarray]:
    if "internal" in Path(radiograph.path).name:
        raise ZeroDivisionError("a bug in the resize step")
    return _wire_input(radiograph, card)


flow.decode_dataset = _crashing_decode_dataset
flow.wire_input = _failing_wire_input

if pids := os.environ.get("RADSERVE_TEST_WORKER_PIDS"):
    with open(pids, "a", encoding="utf-8") as started:
        started.write(f"{os.getpid()}\n")
