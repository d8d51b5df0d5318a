"""The classify flow in one place: a DICOM file becomes result rows through six named steps.

::

    contract     check_contract       client/contract.py                  header → accepted or refused
    decode       decode_dataset       client/dicom (after read_dataset)   file → stored values per frame
    display LUT  display              client/dicom                        modality, VOI, MONOCHROME1 → uint8
    resize       wire_input           client/preprocess.py                uint8 [1, H, W] at the card's size
    request      RequestPacker.infer  client/packing.py → grpc_client.py  ready radiographs, one request
    result row   prediction_row       client/rows.py                      one row per radiograph

The second column names what the code below calls (tests/test_layout.py checks it).
:func:`prepare_file` runs the first four in a decode worker process (:mod:`.decode_pool`);
:func:`classify_prepared` runs the last two in the runner (:mod:`.classify`), which adds
concurrency, DICOM SR output and metrics. Failures travel as values: a file that cannot be
prepared is one error row with its reason, a failed request an ``inference_failed`` row per
radiograph, anything unexpected an ``internal_error`` row naming the exception.

A router (:mod:`radserve.routing`) runs the same steps: resize makes one wire tensor per distinct
input contract of its stages from the same decoded radiograph, and the row names both stages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from radserve.client.contract import ImageFacts, check_contract
from radserve.client.dicom import captured_warnings, decode_dataset, display, read_dataset
from radserve.client.packing import Answer, RequestPacker, Wire
from radserve.client.preprocess import wire_input
from radserve.client.results import ResultRow, Status
from radserve.client.rows import error_row, internal_error, prediction_row, routed_row
from radserve.errors import InferenceError, InputError, NotAcceptedError
from radserve.model_card import ModelCard
from radserve.reasons import Reason
from radserve.routing import RouterCard

if TYPE_CHECKING:
    from radserve.client.detection import Detector

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRadiograph:
    """One frame as the model receives it on the wire."""

    sop_instance_uid: str
    frame: int | None
    image: Wire  # uint8 [1, H, W]; a router's: one per input name
    source: tuple[int, int] = (0, 0)  # rows, columns of the source image (boxes map back onto it)
    rendering_note: str = ""  # the row's rendering_note
    facts: ImageFacts = field(
        default_factory=ImageFacts
    )  # the row's laterality, burned-in annotation, lossy compression


@dataclass(frozen=True)
class PreparedFile:
    """A file turned into wire images, or the reason it could not be (errors travel as values)."""

    path: str
    radiographs: tuple[PreparedRadiograph, ...] = ()
    error_reason: str = ""
    error: str = ""
    seconds: float = 0.0  # time the worker spent on the file (radserve_preprocess_seconds)
    status: Status = "error"  # of the row that reports error_reason: error, or not_accepted
    sop_instance_uid: str = ""  # of a refused instance (its header was read)


def prepare_file(path: str, card: ModelCard | RouterCard) -> PreparedFile:
    """The first four steps, contract → decode → display LUT → resize, for every frame of ``path``."""
    started = time.perf_counter()
    dataset = None
    try:
        with captured_warnings(path):  # pydicom's warnings may quote patient attributes
            dataset = read_dataset(path)
            check_contract(dataset, card.accepts, path)  # contract, header only
            decoded = decode_dataset(dataset, path, card.rendering)  # decode
            radiographs = display(decoded)  # display LUT
        facts = ImageFacts.of(dataset)
        prepared = tuple(
            PreparedRadiograph(  # resize
                r.sop_instance_uid,
                r.frame,
                wire_input(r, card),
                (r.values.shape[0], r.values.shape[1]),
                r.rendering_note,
                facts,
            )
            for r in radiographs
        )
    except NotAcceptedError as refusal:
        uid = str(dataset.get("SOPInstanceUID", "")) if dataset is not None else ""
        return PreparedFile(
            path, error_reason=refusal.reason, error=str(refusal), status="not_accepted", sop_instance_uid=uid
        )
    except InputError as error:
        return PreparedFile(path, error_reason=error.reason, error=str(error))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # a worker answers for every file, even after a codec's panic
        LOGGER.exception("unexpected failure on %s", path)
        return PreparedFile(path, error_reason=Reason.INTERNAL_ERROR, error=internal_error(path, error))
    return PreparedFile(path, prepared, seconds=time.perf_counter() - started)


async def classify_prepared(
    prepared: PreparedFile,
    model: str,
    card: ModelCard | RouterCard,
    packer: RequestPacker,
    detector: Detector | None = None,
) -> list[ResultRow]:
    """The last two steps, request → result row: the rows of one prepared file (one per radiograph), with
    the boxes of ``detector`` (the classifier's companion, :mod:`.detection`) when there is one."""
    if prepared.error_reason:
        return [
            error_row(
                prepared.path,
                model,
                prepared.error_reason,
                prepared.error,
                prepared.sop_instance_uid,
                status=prepared.status,
            )
        ]
    items = prepared.radiographs
    # a detector is a classifier's companion: its wire images are arrays, never a router's dicts
    detecting = (
        [detector.boxes(cast("np.ndarray[Any, Any]", item.image), item.source) for item in items]
        if detector is not None
        else []
    )
    answers, detections = await asyncio.gather(
        asyncio.gather(*(packer.infer(item.image) for item in items), return_exceptions=True),  # request
        asyncio.gather(*detecting, return_exceptions=True),
    )
    found = detections or [[] for _ in items]
    return [
        _row(prepared.path, item, answer, boxes, model, card)
        for item, answer, boxes in zip(items, answers, found, strict=True)
    ]  # result row


def _row(
    path: str,
    item: PreparedRadiograph,
    answer: Answer | BaseException,
    boxes: list[dict[str, Any]] | BaseException,
    model: str,
    card: ModelCard | RouterCard,
) -> ResultRow:
    where = (item.sop_instance_uid, item.frame)
    if isinstance(boxes, BaseException) and not isinstance(answer, BaseException):
        answer = boxes  # the detector failed: the row is an error as if the classifier had
    if isinstance(answer, InferenceError):
        return error_row(path, model, answer.reason, f"{path}: {answer}", *where)
    if isinstance(answer, Exception):
        return error_row(path, model, Reason.INTERNAL_ERROR, internal_error(path, answer), *where)
    if isinstance(answer, BaseException):
        raise answer  # cancellation, interrupts
    probabilities, prediction = answer
    assert not isinstance(boxes, BaseException)  # a detector's failure became the answer above
    if isinstance(card, RouterCard):
        row = routed_row(path, *where, model, card, probabilities, prediction)
    else:
        row = prediction_row(path, *where, model, card, probabilities, prediction)
    return replace(row, boxes=boxes or row.boxes, rendering_note=item.rendering_note, **asdict(item.facts))
