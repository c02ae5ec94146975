"""Run every throughput benchmark side by side and write one JSON + one PNG per benchmark, plus
`summary.json` (machine description, headline figures, the project's targets met or missed).

    .venv/bin/python benchmarks/run_all.py [--size tiny|small|full] [--out benchmarks/results]

`tiny` only checks that everything works (CI); `small` and `full` are measurements. CUDA is
used automatically when present (the device is recorded). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script: the benchmark modules sit next to this file
    sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from common import (  # noqa: E402
    PRESETS,
    log,
    machine_description,
    make_survey,
    model_set,
    to_jsonable,
    write_json,
)

BENCHMARKS = ("hardware_bound", "model_bound", "pipeline", "scaling", "spectral_embedding",
              "detection_completeness", "report_scale")

# Benchmarks run through another module's script that writes its own <name>.json.
OWN_JSON = ("spectral_embedding", "detection_completeness", "report_scale")

# Targets the project commits to (benchmarks/README.md).
TARGETS = {
    "pipeline_vs_model_bound": 0.85,  # on CPU
    "galscale_vs_baseline": 1.0,  # one machine
    "scaling_efficiency_1_to_2_workers": 0.8,  # on 2 cores
}


def _target(value: float | None, target: float, why: str) -> dict[str, Any]:
    if value is None:
        return {"target": target, "value": None, "met": None, "why": why}
    met = value >= target
    out = {"target": target, "value": round(value, 4), "met": met}
    if not met:
        out["short_by"] = round(target - value, 4)
        out["short_by_percent"] = round(100 * (target - value) / target, 1)
        out["why"] = why
    return out


def _pipeline_why(p: dict[str, Any], m: dict[str, Any]) -> str:
    """Evidence for a pipeline gap, built from the measured figures."""
    g = p["galscale"]
    stage = p.get("model_stage_in_process", {})
    parts = [
        f"the job took {g['seconds']:.1f} s for {g['sources']} sources; busy seconds: tile stage "
        f"{g['stage_busy_s'].get('tiles_and_cutouts', 0):.1f} s, model stage "
        f"{g['stage_busy_s'].get('models', 0):.1f} s",
    ]
    if "one_thread" in stage:
        parts.append(
            f"the pipeline's model stage in one process reaches "
            f"{stage['all_threads']['sources_per_s']:.2f} sources/s with "
            f"{stage['all_threads']['threads']} threads but "
            f"{stage['one_thread']['sources_per_s']:.2f} with 1 thread (the job's single model "
            f"actor uses all cores: SurveyJobConfig.model_threads = 0)")
    parts.append(
        f"the model bound's per-source chain ({m['chain']['best_items_per_s']:.2f}/s) counts no "
        f"reading, detection, cutting, preprocessing or writing, which share the same "
        f"{p['cores']} cores")
    for name, v in p.get("variants", {}).items():
        parts.append(f"variant {name}: {v['sources_per_s']:.2f} sources/s")
    return "; ".join(parts)


def summarise(results: dict[str, Any], machine: dict[str, Any], size: str) -> dict[str, Any]:
    head: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    hw, mb = results.get("hardware_bound"), results.get("model_bound")
    p, s = results.get("pipeline"), results.get("scaling")
    if hw:
        head["matmul_gflops"] = {k: v.get("gflops") for k, v in hw["matmul"].items()}
        head["flops_per_item"] = hw["flops_per_item"]
        head["hardware_bound_chain_sources_per_s"] = hw["best_possible_items_per_s"][
            "per_source_chain"]
    if mb:
        head["model_bound_items_per_s"] = mb["best_items_per_s"]
        head["model_bound_chain_sources_per_s"] = mb["chain"]["best_items_per_s"]
        head["d16_exported_vs_escnn_speedup"] = mb["escnn_vs_exported_d16"][
            "speedup_exported_vs_escnn"]
    if p:
        head["pipeline_sources_per_s"] = p["galscale"]["sources_per_s"]
        head["baseline_sources_per_s"] = p["baseline"]["sources_per_s"]
        head.update({k: v for k, v in p["ratios"].items()})
        on_cpu = not torch.cuda.is_available()
        targets["pipeline_vs_model_bound"] = _target(
            p["ratios"]["pipeline_vs_model_bound"] if on_cpu else None,
            TARGETS["pipeline_vs_model_bound"],
            _pipeline_why(p, mb) if on_cpu else "the target is stated for CPU")
        targets["galscale_vs_baseline"] = _target(
            p["ratios"]["galscale_vs_baseline"], TARGETS["galscale_vs_baseline"],
            f"baseline stage seconds {p['baseline']['stage_s']}; " + _pipeline_why(p, mb))
    if s:
        head["scaling_efficiency"] = {w: r["efficiency"] for w, r in s["workers"].items()}
        head["cluster_efficiency_vs_one_node"] = s["cluster"].get(
            "efficiency_vs_one_node_same_workers")
        head["peak_memory_ratio_largest_vs_smallest_survey"] = s[
            "peak_memory_ratio_largest_vs_smallest"]
        w2 = s["workers"].get("2")
        why = ""
        if w2:
            why = (f"1 worker: {s['workers']['1']['sources_per_s']:.2f} sources/s, 2 workers: "
                   f"{w2['sources_per_s']:.2f} on {s['cores']} cores shared with the tile stage "
                   f"(model actors at {w2['cpus_per_model_actor']} CPU and one thread each)")
        targets["scaling_efficiency_1_to_2_workers"] = _target(
            s["efficiency_1_to_2_workers"], TARGETS["scaling_efficiency_1_to_2_workers"], why)
    return {"size": size, "machine": machine, "headline": head, "targets": targets}


def markdown_table(summary: dict[str, Any]) -> str:
    """The headline figures and targets as a Markdown table (pasted into the README)."""
    m, h = summary["machine"], summary["headline"]
    rows = [f"Run {m['date_utc']} on {m['cpu_model']}, {m['cores']} cores, "
            f"{m['cuda_device'] or 'no GPU'}; torch {m['torch']}, ray {m['ray']}; load average "
            f"{m['load_average_at_start']} at start, {m.get('load_average_at_end')} at end; "
            f"`{m['command']}`", "", "| figure | value |", "| --- | --- |"]

    def add(label: str, value: Any, fmt: str = "{:.3g}") -> None:
        if value is not None:
            rows.append(f"| {label} | {fmt.format(value) if isinstance(value, float) else value} |")

    for k, v in (h.get("matmul_gflops") or {}).items():
        add(f"matmul {k} GFLOP/s", v)
    for k, v in (h.get("flops_per_item") or {}).items():
        add(f"GFLOP per item, {k}", v / 1e9)
    add("hardware bound, per-source chain (sources/s)", h.get("hardware_bound_chain_sources_per_s"))
    for k, v in (h.get("model_bound_items_per_s") or {}).items():
        add(f"model bound, {k} (items/s)", v)
    add("model bound, per-source chain (sources/s)", h.get("model_bound_chain_sources_per_s"))
    add("D16: exported / escnn eval-mode speed", h.get("d16_exported_vs_escnn_speedup"))
    add("pipeline end to end (sources/s)", h.get("pipeline_sources_per_s"))
    add("plain DataLoader baseline (sources/s)", h.get("baseline_sources_per_s"))
    add("pipeline FLOP/s / hardware peak", h.get("pipeline_fraction_of_hardware_peak"))
    for k, v in (h.get("scaling_efficiency") or {}).items():
        add(f"efficiency, {k} model workers", v)
    add("2-node cluster / one node, same workers", h.get("cluster_efficiency_vs_one_node"))
    add("peak memory, largest / smallest survey (tiles x16 / x1)",
        h.get("peak_memory_ratio_largest_vs_smallest_survey"))
    rows += ["", "| target | measured | met |", "| --- | --- | --- |"]
    for name, t in summary["targets"].items():
        met = {True: "yes", False: f"no, short by {t.get('short_by_percent')} %",
               None: "not judged"}[t["met"]]
        rows.append(f"| {name} >= {t['target']} | {t['value']} | {met} |")
    return "\n".join(rows) + "\n"


def _spectral(preset: Any, out: Path) -> dict[str, Any]:
    import spectral_scaling

    return spectral_scaling.run(preset, out)


def _detection(preset: Any) -> dict[str, Any]:
    """benchmarks/detection_completeness.py (survey module's) at its defaults; its printout.
    --no-write: that script owns results/detection_completeness.json."""
    if preset.name == "tiny":
        return {"skipped": "not run at size tiny"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "detection_completeness.py"), "--no-write"],
                          capture_output=True, text=True, timeout=1800, cwd=HERE.parent)
    if proc.returncode:
        raise RuntimeError(f"detection_completeness.py failed: {proc.stderr[-2000:]}")
    return {"seconds": time.perf_counter() - started, "stdout": proc.stdout.strip().splitlines()}


def _report_scale(preset: Any, out: Path) -> dict[str, Any]:
    """benchmarks/report_scale.py (the report module's) at its defaults: full size only, since it
    writes report_scale.json itself and a smaller run would replace its committed figures."""
    if preset.name != "full":
        return {"skipped": "run at --size full only (1,000,000-row catalog)"}
    import report_scale

    started = time.perf_counter()
    code = report_scale.main(["--out", str(out / "report_scale.json")])
    if code:
        raise RuntimeError(f"report_scale.py exited with {code}")
    return {"seconds": time.perf_counter() - started, "file": "report_scale.json"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(PRESETS), default="small")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    ap.add_argument("--work", default="", help="folder for surveys, models and run outputs "
                    "(kept, and reused by the next run); default: a temporary folder")
    ap.add_argument("--summary-only", action="store_true",
                    help="rewrite summary.json from the benchmark JSON files already in --out "
                    "(e.g. after an interrupted run); runs nothing")
    args = ap.parse_args(argv)
    preset = PRESETS[args.size]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description([Path(sys.executable).name, *sys.argv] if argv is None
                                  else ["run_all.py", *argv])
    if args.summary_only:
        found = {name: json.loads((out / f"{name}.json").read_text()) for name in BENCHMARKS
                 if name not in OWN_JSON and (out / f"{name}.json").is_file()}
        summary = summarise(found, machine, preset.name)
        summary |= {"benchmarks_run": sorted(found), "summarised_from_files": True,
                    "result_dates": {n: r.get("date_utc") for n, r in found.items()}}
        write_json(out / "summary.json", summary)
        (out / "summary.md").write_text(markdown_table(summary))
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_grad_enabled(False)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="galscale-bench-")
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    started = time.perf_counter()
    weights = "not loaded"
    try:
        models = model_set(work)
        weights = models.weights
        survey = None
        if {"pipeline", "scaling"} & set(args.only):
            log("making the benchmark survey")
            survey = make_survey(work, preset.pipeline_tiles_per_side, preset,
                                 realistic=preset.realistic_survey)
        import hardware_bound
        import model_bound
        import pipeline_throughput
        import scaling
        import spectral_scaling

        steps: list[tuple[str, Callable[[], dict[str, Any]], Any]] = [
            ("hardware_bound", lambda: hardware_bound.run(preset, models, device),
             hardware_bound.plot),
            ("model_bound", lambda: model_bound.run(preset, models, device,
                                                    preset.pipeline_batch_size),
             model_bound.plot),
            ("pipeline", lambda: pipeline_throughput.run(
                preset, models, survey, work, results["model_bound"], results["hardware_bound"],
                preset.pipeline_batch_size), pipeline_throughput.plot),
            ("scaling", lambda: scaling.run(preset, models, survey, work,
                                            preset.pipeline_batch_size), scaling.plot),
            ("spectral_embedding", lambda: _spectral(preset, out), spectral_scaling.plot),
            ("detection_completeness", lambda: _detection(preset), None),
            ("report_scale", lambda: _report_scale(preset, out), None),
        ]
        needs = {"pipeline": ("hardware_bound", "model_bound")}
        for name, fn, plot in steps:
            if name not in args.only:
                continue
            missing = [d for d in needs.get(name, ()) if d not in results]
            if missing:
                errors[name] = f"needs {missing} (run them too)"
                continue
            log(f"== {name}")
            t = time.perf_counter()
            try:
                result = fn()
            except Exception:
                errors[name] = traceback.format_exc()
                log(f"{name} FAILED:\n{errors[name]}")
                continue
            result = to_jsonable({"benchmark": name, "size": preset.name,
                                  "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "load_average": [round(v, 2) for v in os.getloadavg()],
                                  "device": str(device), "models": models.weights,
                                  "seconds": time.perf_counter() - t, **result})
            results[name] = result
            stem = "spectral_embedding_" + preset.name if name == "spectral_embedding" else name
            if name not in OWN_JSON:
                write_json(out / f"{stem}.json", result)
            else:  # the script writes its own JSON; keep the runner's view beside it
                write_json(out / f"{stem}_runner.json", result)
            if plot is not None:
                plot(result, out / f"{stem}.png")
    finally:
        if tmp is not None:
            tmp.cleanup()
    machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    summary = summarise(results, machine, preset.name)
    summary |= {"benchmarks_run": sorted(results), "errors": errors,
                "seconds": time.perf_counter() - started, "models": weights,
                "device": str(device)}
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown_table(summary))
    log(f"wrote {out / 'summary.json'}; errors: {sorted(errors) or 'none'}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
