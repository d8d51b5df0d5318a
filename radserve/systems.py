"""The five served systems: one contract each (architecture, labels, input, outputs), from the studies.

Export (``radserve export --system NAME``) checks a checkpoint against its system's contract and
records the system in the model card; the client, training of the demos and the benchmarks read the
same contract. A contract is what the study published; a demo trained here may run its network at a
smaller size inside the served graph (see :attr:`radserve.model_card.ModelCard.network_input_size`),
the wire keeps the study's input size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydicom.uid import MRImageStorage

from radserve.errors import ModelCardError
from radserve.model_card import InputContract, ModelCard, ResizeMode

GRADCAM_SYSTEM_OUTPUT = "grad-cam"  # a system with it is exported with its Grad-CAM companion NAME_gradcam
_VIEWS = ("ap", "lateral")
_SPINE_CATEGORIES = (
    "preop_normal",  # native spine, normal alignment
    "preop_deformity",  # native spine, scoliosis (AP) or listhesis/kyphosis (lateral)
    "postop_fixation",  # pedicle screws and rods
    "postop_interbody",  # interbody cage (+ screws)
    "postop_arthroplasty",  # disc prosthesis
)
SPINE_VIEW_LABELS: tuple[str, ...] = tuple(f"{view}_{kind}" for view in _VIEWS for kind in _SPINE_CATEGORIES)


@dataclass(frozen=True)
class System:
    """One study's served contract.

    ``channels`` is the wire layout: 1 grey channel per radiograph (replicated to RGB inside the graph,
    so the network's first convolution takes 3), or the MRI stack T1W+T2W x (lesion slice ± k), which
    the network takes as is. ``demo_input_size`` is the size the synthetic demo's network runs at.
    """

    name: str
    architectures: tuple[str, ...]  # the study's first; others selectable
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    channels: int
    modality: str
    resize: ResizeMode
    outputs: tuple[str, ...]  # beyond probabilities
    demo_input_size: tuple[int, int]
    study: str
    accepts: InputContract | None = None  # the instances it answers for; None: radiographs (the default)

    @property
    def architecture(self) -> str:
        """The architecture the system is served with by default (the first of ``architectures``)."""
        return self.architectures[0]

    @property
    def network_channels(self) -> int:
        """Input channels of the network's first convolution."""
        return 3 if self.channels == 1 else self.channels

    def apply(self, card: ModelCard, network_channels: int) -> ModelCard:
        """A model card bound to this contract.

        The served input size becomes the study's; a checkpoint trained at a smaller size (an integer
        divisor of it) runs its network at that size behind an average pooling inside the graph.

        Args:
            card: The card of the checkpoint being exported.
            network_channels: Input channels of the checkpoint's first convolution.

        Returns:
            The card with the system's name, channels, input size and resize mode.

        Raises:
            ModelCardError: The checkpoint does not fit the contract; the message says why.
        """
        where = f"system {self.name!r}"
        if card.architecture not in self.architectures and card.architecture not in (
            "torchscript",
            "torch.export",
        ):
            raise ModelCardError(
                f"{where} is served with {' or '.join(self.architectures)}; "
                f"the checkpoint is {card.architecture}"
            )
        if card.num_classes != len(self.labels):
            raise ModelCardError(
                f"{where} has {len(self.labels)} classes {list(self.labels)}; the checkpoint has "
                f"{card.num_classes} ({list(card.labels)})"
            )
        if tuple(card.labels) != self.labels:
            raise ModelCardError(
                f"{where}: the checkpoint's labels {list(card.labels)} differ from the system's "
                f"{list(self.labels)} (same order required)"
            )
        if network_channels != self.network_channels:
            layout = "1 grey channel replicated to RGB" if self.channels == 1 else f"{self.channels} channels"
            raise ModelCardError(
                f"{where} takes {layout}: the network's first convolution must take {self.network_channels} "
                f"input channels; the checkpoint's takes {network_channels}"
            )
        trained = tuple(card.network_input_size or card.input_size)
        try:
            return card.replace(
                system=self.name,
                channels=self.channels,
                input_size=self.input_size,
                network_input_size=None if trained == self.input_size else trained,
                resize=self.resize,
                accepts=self.accepts or card.accepts,
            )
        except ModelCardError:
            raise ModelCardError(
                f"{where} is served at {self.input_size[0]}x{self.input_size[1]}; the checkpoint was "
                f"trained at {trained[0]}x{trained[1]}, not the same integer divisor of both sides"
            ) from None

    def describe(self) -> str:
        """One line per field, for ``radserve systems``."""
        shape = f"[{self.channels}, {self.input_size[0]}, {self.input_size[1]}] uint8"
        return "\n".join(
            (
                f"{self.name}: {self.study}",
                f"  architecture  {', '.join(self.architectures)}",
                f"  labels        {', '.join(self.labels)}",
                f"  input         {self.modality}, {shape} per {'study' if self.channels > 1 else 'image'}, "
                f"{self.resize}",
                f"  outputs       probabilities{''.join(', ' + output for output in self.outputs)}",
                f"  demo          network at {self.demo_input_size[0]} px behind the "
                f"{self.input_size[0]} px wire",
            )
        )


MRI_SLICES_EACH_SIDE = 1  # k: lesion slice ± k per sequence (the study used k = 1)

SYSTEMS: dict[str, System] = {
    system.name: system
    for system in (
        System(
            name="spine-view",
            architectures=("efficientnet_b6",),
            labels=SPINE_VIEW_LABELS,
            input_size=(528, 528),
            channels=1,
            modality="spine radiograph (AP or lateral)",
            resize="letterbox",
            outputs=(),
            demo_input_size=(88, 88),
            study="spine radiograph view and operative status",
        ),
        System(
            name="spondylolisthesis",
            architectures=("efficientnet_v2_m",),
            labels=("normal", "spondylolysis", "degenerative_spondylolisthesis"),
            input_size=(480, 480),
            channels=1,
            modality="lateral lumbar radiograph",
            resize="letterbox",
            outputs=(GRADCAM_SYSTEM_OUTPUT,),
            demo_input_size=(120, 120),
            study="lumbar spondylolysis and spondylolisthesis",
        ),
        System(
            name="body-region",
            architectures=("resnet18",),
            labels=("shoulder", "elbow", "hand", "pelvis", "knee"),
            input_size=(224, 224),
            channels=1,
            modality="radiograph",
            resize="letterbox",
            outputs=(),
            demo_input_size=(112, 112),
            study="pediatric radiograph body region",
        ),
        System(
            name="vertebral-fracture-mri",
            architectures=("resnet50",),
            labels=("benign", "malignant"),
            input_size=(224, 224),
            channels=2 * (2 * MRI_SLICES_EACH_SIDE + 1),
            modality="MRI: sagittal T1W + T2W series, lesion slice ± 1 "
            "(channels T1 s-1, s, s+1, T2 s-1, s, s+1)",
            resize="stretch",
            outputs=("one row per study",),
            demo_input_size=(112, 112),
            study="benign vs malignant vertebral compression fracture on MRI",
            # single-slice MR Image Storage: Enhanced MR (functional groups) is refused naming its class
            accepts=InputContract(
                modalities=("MR",), sop_classes=(MRImageStorage,), photometric=("MONOCHROME2",)
            ),
        ),
        System(
            name="fracture",
            architectures=("mobilenet_v3_small", "resnet18", "efficientnet_b0"),
            labels=("fracture", "no_fracture"),
            input_size=(384, 384),
            channels=1,
            modality="extremity radiograph",
            resize="letterbox",
            outputs=("temperature", "operating threshold", "boxes"),
            demo_input_size=(192, 192),
            study="extremity fracture detection",
        ),
    )
}


def get_system(name: str) -> System:
    """A served system's contract.

    Args:
        name: The system's name (``radserve systems`` lists them).

    Returns:
        The contract.

    Raises:
        ModelCardError: No system has that name; the message lists the known ones.
    """
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ModelCardError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}") from None


PRIVATE_SCHEME = "99RADSERVE"
"""Coding scheme of the labels no standard code is given for here (docs/reference/conformance.md)."""
# Each label's code in an SR or GSPS: (scheme, value, meaning). SNOMED CT codes as DICOM PS3.16 lists them
# (pydicom.sr.codedict: CID 4031 Common Anatomic Regions, CID 222 Normal-Abnormal, CID 6063 Malignancy),
# "Fracture of bone" (SNOMED CT 125605004) from SNOMED's own editorial material. The other labels are
# compound (view and category) or have no code verified here: finding_code gives them private codes.
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "shoulder": ("SCT", "16982005", "Shoulder"),
    "elbow": ("SCT", "16953009", "Elbow joint"),
    "hand": ("SCT", "85562004", "Hand"),
    "pelvis": ("SCT", "816092008", "Pelvis"),
    "knee": ("SCT", "72696002", "Knee"),
    "normal": ("SCT", "17621005", "Normal"),
    "benign": ("SCT", "30807003", "Benign"),
    "malignant": ("SCT", "21594007", "Malignant"),
    "fracture": ("SCT", "125605004", "Fracture of bone"),
}


def finding_code(label: str) -> tuple[str, str, str]:
    """(coding scheme, code value, code meaning) of a label.

    Args:
        label: A class label of a model.

    Returns:
        Its standard code, else a private code of :data:`PRIVATE_SCHEME` whose value is derived from
        the label (stable across runs and models).
    """
    if label in FINDING_CODES:
        return FINDING_CODES[label]
    digest = hashlib.sha256(label.encode()).hexdigest()[:12].upper()
    return (PRIVATE_SCHEME, f"L{digest}", label[:64])
