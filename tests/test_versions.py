"""Atomic publication and pinned inference: a reload loop during 20 exports never serves a request
under labels of another version; replicas with another card are refused."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from radserve.client.grpc_client import AsyncRadiographClient
from radserve.errors import InferenceError, ServerError
from radserve.export.pipeline import ExportResult
from radserve.export.repository import publish
from radserve.model_card import ModelCard, model_versions
from radserve.server_config.triton import TritonServer, free_ports

EXPORTS = 20


def _relabelled(card: ModelCard, export: int) -> ModelCard:
    return card.replace(name="flip", labels=tuple(f"e{export}-{label}" for label in card.labels))


def test_reload_loop_during_exports_serves_no_request_under_other_labels(
    tiny_export: ExportResult, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    model_file = tiny_export.version_dir / "model.onnx"
    published: dict[str, tuple[str, ...]] = {}  # version -> labels on disk

    def export(number: int) -> None:
        card = _relabelled(tiny_export.card, number)
        published[publish(repository, card, model_file, keep_versions=2).name] = card.labels

    export(0)
    served: list[tuple[str, tuple[str, ...]]] = []  # (answering version, labels the client used)
    failures: list[str] = []
    with TritonServer(repository, ports=free_ports(), model_control="explicit") as server:
        exported, done = threading.Event(), threading.Event()

        def exporter() -> None:
            try:
                for number in range(1, EXPORTS + 1):
                    export(number)
                    time.sleep(0.2)
            finally:
                exported.set()

        def reloader() -> None:
            try:
                while not exported.is_set():
                    server.reload("flip")
                server.reload("flip")
            finally:
                done.set()

        async def classify_loop() -> None:
            image = np.zeros((1, 1, *tiny_export.card.input_size), np.uint8)
            async with AsyncRadiographClient(server.grpc_url) as client:
                while not done.is_set():
                    card = await client.model_card("flip")
                    try:
                        prediction = await client.infer("flip", image)
                    except InferenceError as error:  # the pinned version was unloaded meanwhile
                        failures.append(str(error))
                        continue
                    served.append((prediction.model_version, card.labels))

        threads = [threading.Thread(target=exporter), threading.Thread(target=reloader)]
        for thread in threads:
            thread.start()
        asyncio.run(classify_loop())
        for thread in threads:
            thread.join(timeout=120)
    assert model_versions(repository / "flip") == [EXPORTS, EXPORTS + 1]
    assert not list(repository.glob(".staging-*"))
    versions = {version for version, _ in served}
    assert len(versions) >= 2, versions  # the loop saw several publications
    mismatched = [(version, labels) for version, labels in served if published[version] != labels]
    assert not mismatched, mismatched[:3]
    assert len(failures) < len(served), failures[:3]


def test_a_replica_with_another_card_is_refused(
    repository: Path, tiny_export: ExportResult, triton: TritonServer, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    card = tiny_export.card.replace(labels=tuple(f"x-{label}" for label in tiny_export.card.labels))
    publish(other, card, tiny_export.version_dir / "model.onnx")
    image = np.zeros((1, 1, *card.input_size), np.uint8)

    async def run() -> tuple[ModelCard, list[str]]:
        urls = [triton.grpc_url, replica.grpc_url]
        async with AsyncRadiographClient(urls) as client:
            first = await client.model_card("tiny")
            answered = [(await client.infer("tiny", image)).model_version for _ in range(6)]
            return first, answered

    with TritonServer(other, ports=free_ports()) as replica:
        first, answered = asyncio.run(run())
    assert first == tiny_export.card
    assert set(answered) == {tiny_export.version_dir.name}  # all went to the first replica


def test_no_replica_with_a_readable_card_is_an_error(tmp_path: Path) -> None:
    async def run() -> None:
        async with AsyncRadiographClient(f"127.0.0.1:{free_ports().grpc}") as client:
            await client.model_card("tiny")

    with pytest.raises(ServerError, match="cannot read config"):
        asyncio.run(run())
