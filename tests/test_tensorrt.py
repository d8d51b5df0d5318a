"""TensorRT: the trtexec command, engine metadata checks and config consistency (pure Python here);
building and running a plan needs TensorRT and a GPU (``-m gpu``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from radserve.errors import ExportError
from radserve.export.hashing import file_sha256
from radserve.export.model_config import ServingOptions, build_config
from radserve.export.pipeline import EngineOptions, ExportRequest, export_checkpoint
from radserve.export.tensorrt_plan import (
    EngineMetadata,
    EngineSpec,
    Profile,
    Runtime,
    build_engine,
    check_engine_metadata,
    check_plan,
    trtexec_command,
)
from radserve.model_card import ModelCard
from radserve.settings import BatchingDefaults

CARD = ModelCard(name="spine", architecture="efficientnet_b6", labels=tuple("abc"), input_size=(528, 528))
BATCHING = BatchingDefaults(max_batch_size=32, preferred_batch_sizes=(4, 8, 16))


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not importable here (TensorRT wheels are not installable from this index)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU on this host"
    return None


GPU_REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"needs TensorRT and a GPU: {GPU_REASON}")


def _metadata(**changes: object) -> EngineMetadata:
    values: dict[str, object] = {
        "tensorrt_version": "10.13.3",
        "gpu_name": "NVIDIA A100",
        "compute_capability": (8, 0),
        "precision": "fp32",
        "profile": {"min_batch": 1, "opt_batch": 16, "max_batch": 32, "height": 528, "width": 528},
        "source_onnx_sha256": "0" * 64,
    }
    return EngineMetadata(**(values | changes))  # type: ignore[arg-type]


def test_profile_follows_the_batcher() -> None:
    profile = Profile.for_batching(BATCHING, 528, 528)
    assert (profile.min_batch, profile.opt_batch, profile.max_batch) == (1, 16, 32)
    small = Profile.for_batching(BatchingDefaults(max_batch_size=8), 224, 224)
    assert (small.opt_batch, small.max_batch) == (8, 8)
    with pytest.raises(ExportError, match="min <= opt <= max"):
        Profile(1, 64, 32, 224, 224)


def test_trtexec_command(tmp_path: Path) -> None:
    spec = EngineSpec(
        onnx_path=tmp_path / "m.onnx",
        plan_path=tmp_path / "m.plan",
        profile=Profile.for_batching(BATCHING, 528, 528),
        workspace_bytes=4 << 30,
        timing_cache=tmp_path / "timing.cache",
        hardware_compatible=True,
        version_compatible=True,
    )
    command = trtexec_command(spec)
    assert command[0] == "trtexec"
    assert f"--onnx={tmp_path / 'm.onnx'}" in command
    assert f"--saveEngine={tmp_path / 'm.plan'}" in command
    assert "--minShapes=image:1x1x528x528" in command
    assert "--optShapes=image:16x1x528x528" in command
    assert "--maxShapes=image:32x1x528x528" in command
    assert "--memPoolSize=workspace:4096" in command
    assert f"--timingCacheFile={tmp_path / 'timing.cache'}" in command
    assert {"--stronglyTyped", "--hardwareCompatibilityLevel=ampere+", "--versionCompatible"} <= set(command)
    plain = trtexec_command(EngineSpec(tmp_path / "m.onnx", tmp_path / "m.plan", spec.profile))
    assert not any(part.startswith(("--hardware", "--version", "--timingCache")) for part in plain)


def test_metadata_round_trip_and_plan_hash(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan bytes")
    metadata = _metadata(plan_sha256=file_sha256(plan))
    metadata.write(plan)
    assert EngineMetadata.read(plan) == metadata
    runtime = Runtime("10.13.3", "NVIDIA A100", (8, 0))
    assert check_plan(plan, runtime) == metadata
    plan.write_bytes(b"other bytes")
    with pytest.raises(ExportError, match="does not match the sha256"):
        check_plan(plan, runtime)
    with pytest.raises(ExportError, match="no engine metadata"):
        check_plan(tmp_path / "absent.plan", runtime)


def test_metadata_check_refuses_a_foreign_runtime() -> None:
    check_engine_metadata(_metadata(), Runtime("10.13.3", "NVIDIA A100-SXM4-80GB", (8, 0)))
    with pytest.raises(ExportError, match=r"built with TensorRT 10\.13\.3, the runtime is 10\.14\.1"):
        check_engine_metadata(_metadata(), Runtime("10.14.1", "NVIDIA A100", (8, 0)))
    with pytest.raises(ExportError, match=r"compute capability 8\.0 .* NVIDIA H100 \(9\.0\)"):
        check_engine_metadata(_metadata(), Runtime("10.13.3", "NVIDIA H100", (9, 0)))
    # hardware-compatible plans run on any Ampere or later GPU, not on older ones
    portable = _metadata(hardware_compatibility="ampere+")
    check_engine_metadata(portable, Runtime("10.13.3", "NVIDIA H100", (9, 0)))
    with pytest.raises(ExportError, match="ampere"):
        check_engine_metadata(portable, Runtime("10.13.3", "Tesla T4", (7, 5)))
    # version-compatible plans run on a later TensorRT of their major or the next, never an earlier one
    forward = _metadata(version_compatible=True)
    check_engine_metadata(forward, Runtime("10.14.1", "NVIDIA A100", (8, 0)))
    check_engine_metadata(forward, Runtime("11.0.0", "NVIDIA A100", (8, 0)))
    for refused in ("10.8.0", "12.0.0"):
        with pytest.raises(ExportError, match="built with TensorRT"):
            check_engine_metadata(forward, Runtime(refused, "NVIDIA A100", (8, 0)))


def test_config_max_batch_size_must_fit_the_profile() -> None:
    options = ServingOptions(batching=BATCHING)
    config = build_config(CARD, "tensorrt", options, _metadata())
    assert config.max_batch_size == 32
    assert config.optimization.cuda.graphs
    too_big = ServingOptions(batching=BatchingDefaults(max_batch_size=64))
    with pytest.raises(ExportError, match="exceeds the TensorRT plan's profile max 32"):
        build_config(CARD, "tensorrt", too_big, _metadata())
    with pytest.raises(ExportError, match="built for 224x224"):
        build_config(
            CARD, "tensorrt", options, _metadata(profile={**_metadata().profile, "height": 224, "width": 224})
        )
    with pytest.raises(ExportError, match="the plan is fp16"):
        build_config(CARD, "tensorrt", options, _metadata(precision="fp16"))


@pytest.mark.skipif(GPU_REASON is None, reason="TensorRT and a GPU are present: the plan is built instead")
def test_without_tensorrt_export_names_the_trtexec_command(tiny_checkpoint: Path, tmp_path: Path) -> None:
    spec = EngineSpec(tmp_path / "m.onnx", tmp_path / "m.plan", Profile.for_batching(BATCHING, 64, 64))
    with pytest.raises(ExportError, match="trtexec --onnx="):
        build_engine(spec)
    work = tmp_path / "work"
    request = ExportRequest(
        tiny_checkpoint,
        "trt",
        tmp_path / "repo",
        target="tensorrt",
        samples=4,
        precisions=("fp32", "fp16"),
        work_dir=work,
    )
    with pytest.raises(ExportError) as refused:
        export_checkpoint(request)
    message = str(refused.value)
    assert "NGC" in message
    assert message.count("trtexec --onnx=") == 2
    assert f"--onnx={(work / 'trt_fp16.onnx').resolve()}" in message
    assert (work / "trt_fp32.onnx").is_file() and (work / "trt_fp16.onnx").is_file()
    assert not (tmp_path / "repo" / "trt").exists()


@pytest.mark.gpu
@needs_gpu
def test_build_check_and_publish_a_plan(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from radserve.export.repo_check import check_repository

    request = ExportRequest(
        tiny_checkpoint,
        "trt",
        tmp_path / "repo",
        target="tensorrt",
        samples=8,
        precisions=("fp32", "fp16"),
        work_dir=tmp_path / "work",
        engine=EngineOptions(timing_cache=tmp_path / "timing.cache"),
    )
    result = export_checkpoint(request)
    for variant in result.variants:
        plan = variant.version_dir / "model.plan"
        metadata = check_plan(plan)
        assert metadata.profile["max_batch"] == 32
        assert variant.card.parity.runtimes[f"tensorrt_{variant.precision}"].top1_agreement >= 0.99
    # the timing cache is keyed by TensorRT version and GPU (one file per image and GPU kind)
    (cache,) = tmp_path.glob("timing.trt*-sm*.cache")
    assert cache.stat().st_size > 0
    assert check_repository(tmp_path / "repo").ok
    engine = result.card.engine
    assert engine is not None and engine.tensorrt_version == check_plan(plan).tensorrt_version
    print(f"built with TensorRT {engine.tensorrt_version} on {engine.gpu_name} {engine.compute_capability}")


@pytest.mark.parametrize(
    ("built", "runtime", "compatible", "loads"),
    [
        ("10.5.0", "10.5.0", False, True),
        ("10.5.0", "10.7.0", False, False),  # a plain plan: its own version only
        ("10.5.0", "10.7.0", True, True),
        ("10.5.0", "10.3.0", True, False),  # never an earlier runtime
        ("10.5.0", "11.0.0", True, True),  # 10 -> 11
        ("8.6.1", "10.5.0", True, True),  # 8.6 -> 10
        ("8.6.1", "11.0.0", True, False),  # two majors on
        ("8.5.3", "8.6.1", True, False),  # version compatibility starts at 8.6
    ],
)
def test_runtime_loads_follows_tensorrts_compatibility_rules(
    built: str, runtime: str, compatible: bool, loads: bool
) -> None:
    from radserve.export.ngc_images import runtime_loads

    assert runtime_loads(built, runtime, compatible) is loads


def _recorded_plan_repository(tmp_path: Path, **engine: object) -> Path:
    """A tensorrt model published from a recorded plan (bytes + metadata of a real build's shape)."""
    from radserve.export.repository import publish

    plan = tmp_path / "work" / "model.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"recorded plan bytes")
    metadata = _metadata(plan_sha256=file_sha256(plan), **engine)
    metadata.write(plan)
    card = CARD.replace(engine=metadata.record())
    repository = tmp_path / "repo"
    extra = {"model.plan.json": plan.with_name("model.plan.json")}
    publish(
        repository,
        card,
        plan,
        "tensorrt",
        ServingOptions(batching=BATCHING),
        extra_files=extra,
        engine=metadata,
    )
    return repository


def test_repo_check_refuses_a_plan_the_image_cannot_load(tmp_path: Path) -> None:
    import subprocess
    import sys

    from radserve.export.repo_check import check_repository

    repository = _recorded_plan_repository(tmp_path, tensorrt_version="10.5.0")
    assert check_repository(repository).ok  # no image given: nothing to compare with
    assert check_repository(repository, "nvcr.io/nvidia/tritonserver:24.10-py3").ok  # TensorRT 10.5.0
    for image, runtime in (
        ("nvcr.io/nvidia/tritonserver:25.01-py3", "10.8.0"),
        ("tritonserver:23.10-py3", "8.6.1"),
    ):
        report = check_repository(repository, image)
        assert not report.ok
        assert (
            f"plan built with TensorRT 10.5.0 (not version-compatible); {image} has {runtime}"
            in report.render()
        )
    command = ["repo", "check", str(repository), "--image", "tritonserver:25.01-py3"]
    done = subprocess.run(
        [sys.executable, "-m", "radserve", *command], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "spine [tensorrt] versions 1: FAILED" in done.stdout
    unknown = check_repository(repository, "nvcr.io/nvidia/tritonserver:19.01-py3")
    assert "no TensorRT version known for tritonserver 19.01" in unknown.render()


def test_version_compatible_plan_loads_on_a_later_image_with_the_backend_config(tmp_path: Path) -> None:
    from radserve.export.repo_check import check_repository
    from radserve.server_config.triton import TritonServer

    repository = _recorded_plan_repository(tmp_path, tensorrt_version="10.5.0", version_compatible=True)
    report = check_repository(repository, "nvcr.io/nvidia/tritonserver:25.01-py3")
    assert report.ok, report.render()
    flag = "--backend-config=tensorrt,version-compatible=true"
    assert f"version-compatible plan: start tritonserver with {flag}" in report.render()
    assert flag in TritonServer(repository).command(tmp_path)
    assert not check_repository(repository, "nvcr.io/nvidia/tritonserver:23.10-py3").ok  # 8.6: earlier
    plain = _recorded_plan_repository(tmp_path / "plain", tensorrt_version="10.5.0")
    assert flag not in TritonServer(plain).command(tmp_path)
