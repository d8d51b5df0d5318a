"""``gpu-check.json`` and ``gpu-check.md``: the GPU check's figures, as data and as Markdown tables.

The site's GPU page (docs/measurements/gpu.md) renders the JSON with :func:`render_markdown`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _stage(report: dict[str, Any], name: str) -> dict[str, Any]:
    return report["stages"].get(name) or {}


def _status_lines(report: dict[str, Any]) -> list[str]:
    lines = ["| stage | ok | seconds | error |", "|---|---|---|---|"]
    for name, stage in report["stages"].items():
        error = str(stage.get("error", "")).replace("|", "/").splitlines()
        shown = error[0][:160] if error else ""
        lines.append(
            f"| {name} | {'yes' if stage.get('ok') else 'NO'} | {stage.get('wall_seconds', '')} | {shown} |"
        )
    return lines


def _served_lines(report: dict[str, Any]) -> list[str]:
    raw = _stage(report, "raw").get("img_per_s", {})
    served = _stage(report, "served")
    lines = []
    if raw:
        lines += ["", "Raw (the backend's module in-process, PyTorch fp16 + CUDA graphs), img/s:", ""]
        lines += ["| " + " | ".join(f"b{batch}" for batch in raw) + " |", "|" + "---|" * len(raw)]
        lines.append("| " + " | ".join(f"{rate:,.0f}" for rate in raw.values()) + " |")
    parity = served.get("parity")
    if parity:
        margins = parity.get("disagreement_margins")
        near = f"; the reference's top-1 margin where they disagree: {list(margins)}" if margins else ""
        lines += [
            "",
            f"Served parity vs PyTorch fp32 on the CPU ({parity['samples']} radiographs): top-1 "
            f"{parity['top1_agreement']:.1%}, max abs diff {parity['max_abs_diff']:.2e}{near}.",
        ]
    if served.get("points"):
        lines += ["", "| radiographs per request | in flight | img/s | p50 ms | p99 ms | served / raw |"]
        lines.append("|---|---|---|---|---|---|")
        for point in served["points"]:
            same = raw.get(str(point["per_request"]))
            ratio = f"{point['img_per_s'] / same:.2f}" if same else ""
            lines.append(
                f"| {point['per_request']} | {point['in_flight']} | {point['img_per_s']:,.0f} | "
                f"{point['p50_ms']} | {point['p99_ms']} | {ratio} |"
            )
        lines.append("")
        lines.append("served / raw: against raw at a batch of the same size as one request.")
    return lines


def _decode_lines(report: dict[str, Any]) -> list[str]:
    decode = _stage(report, "decode")
    if not decode.get("files"):
        return []
    lines = [
        "",
        f"GPU decode ({decode.get('nvimgcodec', '?')}), {decode['matrix'][0]} x {decode['matrix'][1]}, "
        f"{decode['bits_stored']} bits stored:",
        "",
    ]
    lines += [
        "| file | bit-exact | GPU one ms | GPU batched /s | CPU (decoder) one ms | error |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in decode["files"].items():
        cpu = f"{entry.get('cpu_one_ms', '-')} ({entry.get('cpu_decoder', '')})"
        lines.append(
            f"| {name} | {entry.get('bit_exact', '-')} | {entry.get('gpu_one_ms', '-')} | "
            f"{entry.get('gpu_batched_per_s', '-')} | {cpu} | {entry.get('error', '')} |"
        )
    lines += ["", f"Host-to-GPU copy of the uncompressed pixels: {decode.get('h2d_uncompressed_ms')} ms."]
    client = decode.get("client_224") or {}
    if client:
        lines += [
            "",
            "The client's `--decode gpu` (decode + display table + letterbox to 224) vs its CPU path:",
            "",
            "| file | on GPU | max grey diff | GPU ms/file | CPU ms/file | fallback / error |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {entry['on_gpu']} | {entry.get('max_grey_diff', '-')} | "
            f"{entry.get('gpu_ms', '-')} | {entry.get('cpu_ms', '-')} | "
            f"{entry.get('fallback_reason', entry.get('error', ''))} |"
            for name, entry in client.items()
        ]
    elif decode.get("client_error"):
        lines += ["", f"The client's `--decode gpu` failed: {decode['client_error']}"]
    return lines


def _end_to_end_lines(report: dict[str, Any]) -> list[str]:
    stage = _stage(report, "end_to_end")
    if not stage.get("syntaxes"):
        return []
    lines = [
        "",
        f"End to end, DICOM files ({stage['matrix'][0]} x {stage['matrix'][1]}, {stage['bits_stored']} bits "
        f"stored) to rows, {stage['images_per_request']} radiographs per request, "
        f"{stage['cpu_decode_workers']} CPU decode workers:",
        "",
        "| syntax | decode | files | rows ok | radiographs/s | p50 ms | p95 ms | prepare ms/file | "
        "request ms | decoded by | GPU / CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for syntax, entry in stage["syntaxes"].items():
        for decode, run in entry.items():
            if not isinstance(run, dict):
                continue
            decoded = ", ".join(f"{key} {value}" for key, value in run.get("decoded_files", {}).items())
            ratio = entry.get("gpu_over_cpu", "") if decode == "gpu" else ""
            lines.append(
                f"| {syntax} | {decode} | {run['files']} | {run['ok']} | {run['radiographs_per_s']} | "
                f"{run.get('end_to_end_p50_ms')} | {run.get('end_to_end_p95_ms')} | "
                f"{run.get('prepare_ms_per_file')} | {run.get('request_ms')} | {decoded} | {ratio} |"
            )
    return lines


def _systems_lines(report: dict[str, Any]) -> list[str]:
    stage = _stage(report, "systems")
    if not stage.get("systems"):
        return []
    per_request, in_flight = stage["served_point"]
    lines = [
        "",
        f"The five systems (random weights, fp16), raw img/s and served at {per_request} per request x "
        f"{in_flight} in flight:",
        "",
        "| system | architecture | input | raw b1 | raw b8 | raw b32 | served | p99 ms | served / raw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in stage["systems"].items():
        raw = entry.get("raw_img_per_s", {})
        served = entry.get("served", {})
        lines.append(
            f"| {name} | {entry['architecture']} | {'x'.join(map(str, entry['input']))} | "
            f"{raw.get('1', '-')} | {raw.get('8', '-')} | {raw.get('32', '-')} | "
            f"{served.get('img_per_s', '-')} | {served.get('p99_ms', '-')} | "
            f"{entry.get('served_over_raw', '-')} |"
        )
    return lines


def _tensorrt_lines(report: dict[str, Any]) -> list[str]:
    stage = _stage(report, "tensorrt")
    probe = stage.get("probe")
    if not probe:
        return []
    found = {key: probe.get(key) for key in ("tensorrt", "trtexec", "torch_tensorrt", "onnxruntime_trt")}
    lines = [
        "",
        "TensorRT on the host: " + ", ".join(f"{key} {value or 'absent'}" for key, value in found.items()),
    ]
    for precision, entry in (stage.get("plans") or {}).items():
        if "error" in entry:
            lines.append(f"- {precision} plan: {entry['error']}")
        else:
            rates = ", ".join(f"b{batch} {rate:,.0f}" for batch, rate in entry["img_per_s"].items())
            parity = entry["parity"]
            lines.append(
                f"- {precision} plan built in {entry['build_seconds']} s; top-1 "
                f"{parity['top1_agreement']:.1%}, max abs diff {parity['max_abs_diff']:.2e}; "
                f"raw img/s {rates}"
            )
    return lines


def _cpu_target_lines(report: dict[str, Any]) -> list[str]:
    stage = _stage(report, "cpu_target")
    if not stage.get("points"):
        return []
    lines = [
        "",
        f"The embedded CPU target on {stage['cores']} cores: engine limit {stage['engine_limit_img_per_s']} "
        f"img/s ({stage['engine_limit_layout']}); served:",
        "",
        "| radiographs per request | in flight | img/s | p50 ms | p99 ms | served / engine limit |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {point['per_request']} | {point['in_flight']} | {point['img_per_s']} | {point['p50_ms']} | "
        f"{point['p99_ms']} | {point['over_engine_limit']} |"
        for point in stage["points"]
    ]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    environment = _stage(report, "environment")
    title = "GPU check (CPU dry run: figures are not GPU figures)" if report["dry_run"] else "GPU check"
    lines = [f"# {title}", ""]
    if environment.get("ok"):
        lines.append(
            f"{environment.get('gpu', 'no GPU')}, {environment.get('nvidia_smi', '')}; Python "
            f"{environment['python']}, torch {environment['torch']}, {environment['cpu_count']} CPUs."
        )
    model = _stage(report, "model")
    if model.get("ok"):
        lines.append("")
        lines.append(f"Demo model: {model['demo']}; export parity {json.dumps(model['export_parity'])}.")
    lines += ["", *_status_lines(report), *_served_lines(report), *_end_to_end_lines(report)]
    lines += [*_decode_lines(report), *_systems_lines(report), *_tensorrt_lines(report)]
    lines += _cpu_target_lines(report)
    if "total_seconds" in report:
        lines += ["", f"Total: {report['total_seconds']} s."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu-check.md").write_text(render_markdown(report))
