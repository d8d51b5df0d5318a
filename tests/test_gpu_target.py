"""The embedded-gpu target on this CPU host: config, export + gate, repository check, model code up to
device selection, and the one-line load failure of the real tritonserver on a host without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError, ServerError
from radserve.export.gpu_export import GPU_PRECISIONS, gpu_serving_options
from radserve.export.gpu_model import GraphRunner, ServingNetwork, load_runner, padded_size, select_device
from radserve.export.model_config import build_config, padded_batch_sizes, parse_config, render_config
from radserve.export.pipeline import ExportRequest, ExportResult, export_checkpoint
from radserve.export.repo_check import check_repository
from radserve.model_card import ModelCard
from radserve.server_config.serving_view import host_sized_config
from radserve.server_config.triton import TritonServer, free_ports

CARD = ModelCard(name="region", architecture="resnet18", labels=tuple("abcde"), input_size=(64, 64))


@pytest.fixture(scope="module")
def gpu_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> ExportResult:
    repository = tmp_path_factory.mktemp("gpu-repository")
    request = ExportRequest(
        tiny_checkpoint, "tinygpu", repository, target="embedded-gpu", samples=6, precisions=GPU_PRECISIONS
    )
    return export_checkpoint(request)


def test_padded_sizes_are_powers_of_two_up_to_the_max() -> None:
    assert padded_batch_sizes(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert padded_batch_sizes(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert padded_batch_sizes(1) == (1,)
    sizes = padded_batch_sizes(100)
    assert [padded_size(n, sizes) for n in (1, 3, 8, 9, 65, 100)] == [1, 4, 8, 16, 100, 100]
    with pytest.raises(ValueError, match="exceeds the largest padded size 100"):
        padded_size(101, sizes)


def test_config_places_the_model_on_the_gpu_with_fixed_shapes() -> None:
    config = build_config(CARD, "embedded-gpu", gpu_serving_options())
    assert parse_config(render_config(config)) == config
    assert config.backend == "python" and not config.default_model_filename
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert config.max_batch_size == 256
    sizes = config.parameters["padded_batch_sizes"].string_value
    # every padded size but 1 is preferred: a lone request waits the queue delay for company
    assert sizes == ",".join(str(size) for size in (1, *config.dynamic_batching.preferred_batch_size))
    assert config.parameters["weights_filename"].string_value == "weights.pt"
    # host sizing is for the CPU embedded target only: the serving view leaves this config as written
    text = render_config(config)
    assert host_sized_config(text, instances=4, threads=4) == (text, False)


def _network(classes: int = 5) -> ServingNetwork:
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.Flatten(), torch.nn.LazyLinear(classes)
    )
    network(torch.zeros(1, 3, 16, 16))  # materialise the lazy layer
    return ServingNetwork(network, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 2.0, torch.float32)


def test_runner_pads_stages_and_splits_any_request_mix() -> None:
    module = _network()
    runner = GraphRunner(module, (16, 16), 5, (1, 2, 4, 8), torch.device("cpu"))
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 1, 16, 16), dtype=np.uint8) for n in (3, 1, 11, 2)]
    probabilities = runner.infer(arrays)
    with torch.inference_mode():
        expected = module(torch.from_numpy(np.concatenate(arrays))).numpy()
    assert probabilities.shape == (17, 5)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_export_gates_and_publishes_both_precisions(gpu_export: ExportResult) -> None:
    names = [variant.card.name for variant in gpu_export.variants]
    assert names == ["tinygpu_fp16", "tinygpu"]
    for variant in gpu_export.variants:
        assert {path.name for path in variant.version_dir.iterdir()} == {
            "model.py",
            "weights.pt",
            "model_card.json",
        }
        (key,) = variant.card.parity.runtimes
        assert key == f"pytorch_{variant.precision}_{'cuda' if torch.cuda.is_available() else 'cpu'}"
        assert variant.parity.top1_agreement >= 0.99
        assert variant.parity.max_abs_diff <= (1e-2 if variant.precision == "fp16" else 1e-3)
    report = check_repository(gpu_export.version_dir.parent.parent)
    assert report.ok, report.render()
    assert "[embedded-gpu]" in report.render()


def test_served_module_reloads_from_the_version_folder(gpu_export: ExportResult) -> None:
    variant = gpu_export.variants[1]  # fp32
    runner = load_runner(str(variant.version_dir), (1, 2, 4), torch.device("cpu"))
    images = np.zeros((3, 1, *variant.card.input_size), dtype=np.uint8)
    assert runner.infer([images]).shape == (3, variant.card.num_classes)


def test_repo_check_refuses_weights_that_do_not_fit(gpu_export: ExportResult, tmp_path: Path) -> None:
    import shutil

    repository = tmp_path / "repo"
    shutil.copytree(gpu_export.version_dir.parent, repository / "tinygpu_fp16")
    torch.save({"fc.weight": torch.zeros(2, 2)}, repository / "tinygpu_fp16" / "1" / "weights.pt")
    report = check_repository(repository)
    assert not report.ok
    assert "weights.pt does not load into resnet18" in report.render()


def test_export_refuses_int8(tiny_checkpoint: Path, tmp_path: Path) -> None:
    request = ExportRequest(tiny_checkpoint, "x", tmp_path, target="embedded-gpu", precisions=("int8",))
    with pytest.raises(ExportError, match="embedded-gpu publishes fp16 and/or fp32"):
        export_checkpoint(request)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA: the load succeeds")
def test_without_cuda_the_model_fails_to_load_with_one_clear_line(
    gpu_export: ExportResult, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA GPU") as caught:
        select_device("GPU", "0", "tinygpu")
    assert "\n" not in str(caught.value)
    repository = gpu_export.version_dir.parent.parent
    server = TritonServer(repository, ports=free_ports(), log_file=tmp_path / "log")
    # tritonserver itself refuses KIND_GPU instances first; model.py's line covers a PyTorch without CUDA
    with pytest.raises(ServerError, match="tinygpu_fp16 has kind KIND_GPU but no GPUs are available"):
        server.start(timeout=120)


def test_cuda_graphs_match_eager() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this host: the CUDA-graph path runs in the GPU check (gpu-bundle)")
    device = torch.device("cuda")
    module = _network().to(device)
    runner = GraphRunner(module, (16, 16), 5, (1, 2, 4, 8), device)
    assert sorted(runner.graphs) == [1, 2, 4, 8]
    images = np.random.default_rng(1).integers(0, 256, (13, 1, 16, 16), dtype=np.uint8)
    with torch.inference_mode():
        expected = module(torch.from_numpy(images).to(device)).cpu().numpy()
    np.testing.assert_allclose(runner.infer([images]), expected, atol=1e-5)


def test_server_turns_gpu_metrics_on_and_sizes_shared_memory_from_the_largest_request(tmp_path: Path) -> None:
    """A GPU model turns GPU metrics on; the Python backend's shared memory holds its largest request."""
    from radserve.export.targets import get_target
    from radserve.server_config.serving_view import repository_needs

    cpu_only = tmp_path / "cpu"
    (cpu_only / "m").mkdir(parents=True)
    (cpu_only / "m" / "config.pbtxt").write_text(
        render_config(build_config(CARD, get_target("onnxruntime", "cpu")))
    )
    assert "--allow-gpu-metrics=false" in TritonServer(cpu_only).command(tmp_path)
    assert repository_needs(cpu_only).python_request_bytes == 0  # no Python-backend model
    gpu = tmp_path / "gpu"
    (gpu / "m").mkdir(parents=True)
    config = build_config(CARD, "embedded-gpu", gpu_serving_options())
    (gpu / "m" / "config.pbtxt").write_text(render_config(config))
    needs = repository_needs(gpu)
    height, width = CARD.input_size
    per_radiograph = height * width + 4 * CARD.num_classes  # uint8 image in, fp32 probabilities out
    assert needs.gpu and needs.python_request_bytes == config.max_batch_size * per_radiograph
    command = TritonServer(gpu).command(tmp_path)
    assert "--allow-gpu-metrics=true" in command
    size = max(needs.python_request_bytes, 1 << 20)
    assert f"--backend-config=python,shm-default-byte-size={size}" in command
    assert f"--backend-config=python,shm-growth-byte-size={size}" in command
