"""``make gpu-bundle``: everything an offline GPU host with Python 3.12 + PyTorch needs for the GPU check.

``build/gpu-bundle/`` (at most :data:`MAX_BUNDLE_BYTES`):

- ``tritonserver.tar.xz``: the nvidia-pytriton wheel's ``tritonserver`` and libraries, without what the
  check does not use (other interpreters' stubs, the wheel's ``libpython3*.so``);
- ``site-packages.tar.xz``: the Python 3.12 packages the GPU host lacks (:data:`WHEELS`), unpacked;
  nvImageCodec keeps only its Python 3.12 module and its nvJPEG / nvJPEG2000 extensions;
- ``radserve-*.whl``; ``dicom.tar.xz``: one real-size synthetic radiograph stored uncompressed and
  with each lossless syntax the GPU decodes (same stored pixels: the uncompressed file is the
  reference of the bit-exact check), ``dicom/manifest.json``;
- ``check.sh`` (loadtests/gpu_check.sh) and ``MANIFEST.json`` (sizes and sha256 of every file).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from radserve.export.hashing import file_sha256

LOGGER = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 60_000_000
PYTHON_VERSION = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
# What the GPU host (torch, numpy, onnxruntime, opencv, grpcio, cupy, scikit-learn) lacks for the check.
WHEELS = (
    "pydicom==3.0.2",
    "tritonclient==2.73.0",
    "python-rapidjson==1.25",
    "ml_dtypes==0.5.4",
    "protobuf==6.33.6",
    "packaging",
    "onnx==1.23.2",
    "nvidia-nvjpeg2k-cu13==0.11.0.51",
    "nvidia-nvjpeg==13.3.2.43",
    # last: its nvidia/__init__.py (a pkgutil namespace, so the host's nvidia/ wheels stay importable)
    # replaces nvjpeg2k's empty one
    "nvidia-nvimgcodec-cu13==0.9.0.20",
)
# Dropped from the unpacked wheels: headers, tools, other interpreters' modules, codecs not decoded.
_DROP_PREFIXES = ("nvidia/nvimgcodec/tools/", "onnx/backend/test/")
_DROP_SUFFIXES = (".h", ".hpp", ".cc", ".proto", ".proto3", ".pyi")
_KEEP_EXTENSIONS = ("libnvjpeg_ext.so", "libnvjpeg2k_ext.so")
SMOOTHING_SIGMA = 1.5  # pixels
MATRIX = (1955, 1841)  # rows, columns of the bundled radiographs (a real CR's; 12 bits stored)


def _keep_member(name: str) -> bool:
    if name.startswith(_DROP_PREFIXES) or name.endswith(_DROP_SUFFIXES) or "/include/" in name:
        return False
    if name.startswith("nvidia/nvimgcodec/nvimgcodec_impl.cpython-"):
        return name.startswith("nvidia/nvimgcodec/nvimgcodec_impl.cpython-312-")
    if name.startswith("nvidia/nvimgcodec/extensions/"):
        return Path(name).name.startswith(_KEEP_EXTENSIONS)
    return True


def download_wheels(cache: Path) -> list[Path]:
    """The Python 3.12 wheels of :data:`WHEELS` (pip download into ``cache``, once)."""
    cache.mkdir(parents=True, exist_ok=True)
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", PYTHON_VERSION, *platforms, "--platform", "any", "-d", str(cache)]
    subprocess.run([*command, *WHEELS], check=True)
    wheels = []
    for requirement in WHEELS:
        name = requirement.split("==")[0].replace("-", "_").lower()
        matches = sorted(cache.glob(f"{name}-*.whl"), key=lambda path: path.stat().st_mtime)
        if not matches:
            raise FileNotFoundError(f"pip download left no wheel for {requirement} in {cache}")
        wheels.append(matches[-1])
    return wheels


def _xz_tree(source: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(source)), recursive=False)


def pack_site_packages(wheels: list[Path], archive: Path) -> None:
    """Unpack ``wheels`` (less :func:`_keep_member`'s drops) into one tar.xz."""
    with tempfile.TemporaryDirectory(prefix="radserve-site-") as work:
        root = Path(work)
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive_file:
                for member in archive_file.infolist():
                    if _keep_member(member.filename) and not member.is_dir():
                        archive_file.extract(member, root)
        _xz_tree(root, archive)


def pack_tritonserver(archive: Path) -> None:
    """The installed nvidia-pytriton wheel's tritonserver, for Python 3.12 stubs only."""
    from radserve.server_config.triton import _pytriton_root

    site = _pytriton_root().parent

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name
        if "__pycache__" in name or Path(name).name.startswith("libpython3"):
            return None
        if "python_backend_stubs/" in name:  # the stub of each interpreter: keep Python 3.12's
            return info if name.split("python_backend_stubs/")[1].split("/")[0] == PYTHON_VERSION else None
        return info

    with tarfile.open(archive, "w:xz", preset=6) as tar:
        tar.add(site / "pytriton" / "__init__.py", arcname="pytriton/__init__.py")
        tar.add(site / "pytriton" / "tritonserver", arcname="pytriton/tritonserver", filter=keep)
        tar.add(site / "nvidia_pytriton.libs", arcname="nvidia_pytriton.libs", filter=keep)


def build_radserve_wheel(into: Path) -> Path:
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "-w", str(into), str(root)], check=True)
    return next(into.glob("radserve-*.whl"))


def write_dicom_set(folder: Path, matrix: tuple[int, int] = MATRIX) -> list[dict[str, str]]:
    """One radiograph stored uncompressed and with each GPU-decodable lossless syntax, same pixels.

    Every compressed file is checked here against the stored pixels with radserve's CPU decoder.
    """
    import cv2
    import imagecodecs
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, JPEG2000Lossless, JPEGLosslessSV1

    from radserve.client.dicom import decode, pixel_info, read_dataset, read_radiographs
    from radserve.synthetic._codecs import set_pixels
    from radserve.synthetic.dataset import synthetic_dataset

    folder.mkdir(parents=True, exist_ok=True)
    base = synthetic_dataset("pelvis", np.random.default_rng(2), matrix=matrix)
    # the phantom's per-pixel noise compresses to ~9 bits/pixel; smoothed, it compresses about as a
    # real CR does (2.5-3:1 lossless), which keeps the bundle within its size
    smoothed = cv2.GaussianBlur(base.pixel_array.astype(np.float32), (0, 0), SMOOTHING_SIGMA)
    stored = np.clip(np.rint(smoothed), 0, (1 << int(base.BitsStored)) - 1).astype(np.uint16)
    records = []
    variants = [
        ("uncompressed", ExplicitVRLittleEndian, None),
        ("j2k-lossless", JPEG2000Lossless, None),
        ("htj2k-lossless", HTJ2KLossless, None),
        ("jpeg-lossless-sv1-libjpeg-turbo", JPEGLosslessSV1, None),
        ("jpeg-lossless-sv1-lj92", JPEGLosslessSV1, imagecodecs.ljpeg_encode),
    ]
    for name, syntax, encoder in variants:
        ds = copy.deepcopy(base)
        if encoder is None:
            set_pixels(ds, stored, syntax)
        else:  # a second JPEG Lossless encoder (liblj92): nvJPEG's support differs by stream
            ds.PixelData = encapsulate([bytes(encoder(stored, bitspersample=int(ds.BitsStored)))])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = syntax
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        reread = read_dataset(str(path))
        (frame,) = decode(reread, pixel_info(reread, str(path)), str(path)).frames
        if not np.array_equal(frame.astype(np.uint16), stored):
            raise RuntimeError(f"{path}: radserve's CPU decoder does not return the stored pixels")
        read_radiographs(path)  # and the whole client pipeline reads it
        records.append({"file": path.name, "name": name, "transfer_syntax": str(syntax)})
    (folder / "manifest.json").write_text(
        json.dumps({"matrix": list(matrix), "bits_stored": int(base.BitsStored), "files": records}, indent=2)
    )
    return records


def build_bundle(out: Path, cache: Path) -> dict[str, int]:
    """Build the bundle in ``out`` (replaced); returns file sizes. Raises when over the size limit."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    triton_cache = cache / f"tritonserver-{metadata.version('nvidia-pytriton')}-py{PYTHON_VERSION}.tar.xz"
    if not triton_cache.is_file():
        LOGGER.info("repacking tritonserver (about 2 minutes of xz)")
        pack_tritonserver(triton_cache.with_suffix(".partial"))
        triton_cache.with_suffix(".partial").rename(triton_cache)
    shutil.copyfile(triton_cache, out / "tritonserver.tar.xz")
    LOGGER.info("packing the Python 3.12 wheels")
    pack_site_packages(download_wheels(cache / "wheels"), out / "site-packages.tar.xz")
    build_radserve_wheel(out)
    with tempfile.TemporaryDirectory(prefix="radserve-dicom-") as work:
        write_dicom_set(Path(work) / "dicom")
        _xz_tree(Path(work), out / "dicom.tar.xz")
    check = out / "check.sh"
    shutil.copyfile(Path(__file__).with_name("gpu_check.sh"), check)
    check.chmod(0o755)
    sizes = {path.name: path.stat().st_size for path in sorted(out.iterdir())}
    manifest = {name: {"bytes": size, "sha256": file_sha256(out / name)} for name, size in sizes.items()}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(path.stat().st_size for path in out.iterdir())
    if total > MAX_BUNDLE_BYTES:
        raise RuntimeError(
            f"the bundle is {total / 1e6:.1f} MB, over {MAX_BUNDLE_BYTES / 1e6:.0f} MB: {sizes}"
        )
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/gpu-bundle"))
    parser.add_argument("--cache", type=Path, default=Path("build/gpu-bundle-cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = build_bundle(args.out, args.cache)
    for name, size in sizes.items():
        print(f"{size / 1e6:8.2f} MB  {name}")
    print(f"{sum(sizes.values()) / 1e6:8.2f} MB  in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
