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
from radserve.export.tensorrt import (
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
    # version-compatible plans run on a later TensorRT, never an earlier one
    forward = _metadata(version_compatible=True)
    check_engine_metadata(forward, Runtime("10.14.1", "NVIDIA A100", (8, 0)))
    with pytest.raises(ExportError, match="built with TensorRT"):
        check_engine_metadata(forward, Runtime("10.8.0", "NVIDIA A100", (8, 0)))


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
        assert variant.card.parity[f"tensorrt_{variant.precision}"]["top1_agreement"] >= 0.99
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert check_repository(tmp_path / "repo").ok
