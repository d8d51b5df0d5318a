"""``radserve explain``: the Grad-CAM heat map of one radiograph, computed by the served system.

The maps come from the model's Grad-CAM companion ``NAME_gradcam`` (published by ``radserve export
--gradcam``): one map per class at the last convolutional block. The client only upsamples the
chosen class's map to the input size and draws it over the preprocessed radiograph, with the class
and its probability in the top-left corner. ``--dicom`` also writes it as a DICOM Secondary
Capture in the source's study, referencing the source instance.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radserve.client.dicom import read_radiographs
from radserve.client.grpc_client import AsyncRadiographClient, ConnectionOptions
from radserve.client.preprocess import model_input
from radserve.client.sr import read_source_header
from radserve.errors import ClinicalError, ServerError
from radserve.model_card import GRADCAM_OUTPUT, GRADCAM_SUFFIX
from radserve.settings import SETTINGS

_HEAT_WEIGHT = 0.55  # opacity of the heat map where the map is at its maximum


@dataclass(frozen=True)
class Explanation:
    """One radiograph's Grad-CAM: the wire image, the chosen class and its map at the input size."""

    path: str
    sop_instance_uid: str
    model: str
    model_version: str
    label: str
    probability: float
    image: np.ndarray  # uint8 [H, W]: what the model received
    heat: np.ndarray  # float [H, W] in 0..1: the class's map, upsampled and scaled to its maximum
    raw_map: np.ndarray  # float [h, w]: the served map, as the companion answered it

    def overlay(self) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``: the radiograph, the heat map over it, the class in the corner."""
        grey = cv2.cvtColor(self.image, cv2.COLOR_GRAY2BGR).astype(np.float32)
        colour = cv2.applyColorMap(np.uint8(self.heat * 255), cv2.COLORMAP_JET).astype(np.float32)
        alpha = (_HEAT_WEIGHT * self.heat)[..., np.newaxis]
        picture = np.uint8(np.clip(grey * (1 - alpha) + colour * alpha, 0, 255))
        text = f"{self.label} {self.probability:.3f}"
        scale = max(0.35, self.image.shape[1] / 560)
        (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(picture, (0, 0), (width + 8, height + base + 8), (0, 0, 0), thickness=-1)
        cv2.putText(
            picture, text, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
        return cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)


def companion_name(model: str) -> str:
    """The Grad-CAM companion serving ``model``'s maps (``model`` itself if it is one)."""
    return model if model.endswith(GRADCAM_SUFFIX) else f"{model}{GRADCAM_SUFFIX}"


async def explain(
    path: Path,
    model: str,
    connection: str | ConnectionOptions = SETTINGS.grpc_url,
    label: str | None = None,
) -> Explanation:
    """Grad-CAM of ``label`` (default: the predicted class) for the first frame of ``path``.

    ``connection`` is the server's URL, or the full connection options (TLS, admin key, retry).
    """
    companion = companion_name(model)
    radiograph = read_radiographs(path)[0]
    if isinstance(connection, str):
        connection = ConnectionOptions(connection)
    async with AsyncRadiographClient.connect(connection) as client:
        try:
            await client.wait_ready(companion, connection.ready_timeout_seconds)
        except ServerError as error:
            hint = (
                f"the Grad-CAM companion is published by radserve export CHECKPOINT --name {model} --gradcam"
            )
            raise ClinicalError(f"{error} ({hint})") from None
        card = await client.model_card(companion)
        if label is not None and label not in card.labels:
            raise ClinicalError(f"label {label!r} is not one of {companion}'s labels {list(card.labels)}")
        image = model_input(radiograph, card)
        prediction = await client.infer(companion, image[np.newaxis], extra_outputs=[GRADCAM_OUTPUT])
    probabilities = prediction.probabilities[0]
    index = card.labels.index(label) if label is not None else int(np.argmax(probabilities))
    raw = prediction.extra[GRADCAM_OUTPUT][0, index].astype(np.float64)
    height, width = card.input_size
    heat = cv2.resize(raw, (width, height), interpolation=cv2.INTER_LINEAR)
    peak = heat.max()
    return Explanation(
        path=str(path),
        sop_instance_uid=radiograph.sop_instance_uid,
        model=model,
        model_version=prediction.model_version,
        label=card.labels[index],
        probability=float(probabilities[index]),
        image=image[0],
        heat=heat / peak if peak > 0 else heat,
        raw_map=raw,
    )


def explain_file(
    path: Path,
    model: str,
    connection: str | ConnectionOptions = SETTINGS.grpc_url,
    label: str | None = None,
) -> Explanation:
    """Blocking form of :func:`explain`."""
    return asyncio.run(explain(path, model, connection, label))


def write_png(explanation: Explanation, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(output), cv2.cvtColor(explanation.overlay(), cv2.COLOR_RGB2BGR)):
        raise ClinicalError(f"cannot write {output}")
    return output


def write_secondary_capture(explanation: Explanation, output: Path) -> Path:
    """The overlay as a DICOM Secondary Capture in the source's study, referencing the source."""
    from highdicom.sc import SCImage

    source = read_source_header(Path(explanation.path))
    orientation = list(getattr(source, "PatientOrientation", None) or [])
    sc = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=explanation.overlay(),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=generate_uid(
            entropy_srcs=["radserve-gradcam-series", source.StudyInstanceUID, explanation.model]
        ),
        series_number=9902,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="radserve",
        patient_orientation=("L", "F"),  # replaced below by the source's own (Type 2: may be empty)
    )
    sc.PatientOrientation = orientation if len(orientation) == 2 else ""
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    sc.DerivationDescription = (
        f"Grad-CAM of {explanation.label} ({explanation.probability:.3f}) by {explanation.model} "
        f"version {explanation.model_version}"
    )[:1024]
    output.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(output, sc, enforce_file_format=True)
    return output
