"""Synthetic radiographs for demos, training demo models, tests and benchmarks (never in production).

Procedural phantoms of five body regions (:mod:`radserve.synthetic.phantoms`) written as DICOM files
the way real CR / DX objects are stored (:mod:`radserve.synthetic.dataset`). A hospital deployment
of :mod:`radserve.client` never imports this package. Each served system's data (spine views,
spondylolisthesis, fractures with boxes, MRI studies): :mod:`radserve.synthetic.system_images`,
:mod:`radserve.synthetic.mri`.
"""

from radserve.synthetic._codecs import COMPRESSED_SYNTAXES, available_compressed_syntaxes, decode_stored
from radserve.synthetic.dataset import (
    REGIONS,
    SyntheticRecord,
    render_region,
    synthetic_dataset,
    write_synthetic_set,
)

__all__ = [
    "COMPRESSED_SYNTAXES",
    "REGIONS",
    "SyntheticRecord",
    "available_compressed_syntaxes",
    "decode_stored",
    "render_region",
    "synthetic_dataset",
    "write_synthetic_set",
]
