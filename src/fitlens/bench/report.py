"""``report.json`` (every number) and ``report.md`` (the tables and the goals, in words) from one
results dict of :func:`fitlens.bench.suite.run`. Nothing here measures anything; the goals are
judged in :mod:`fitlens.bench.goals`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fitlens.bench.goals import MB, goals, latency, real_epoch_ms, shipped
from fitlens.bench.int8 import PARITY_NOTE


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return [*lines, ""]


def _mean_sd(q: dict[str, Any]) -> str:
    if q["f1_macro_mean"] is None:
        return "-"
    sd = q["f1_macro_std"]
    return f"{q['f1_macro_mean']:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _oof_f1(q: dict[str, Any]) -> str:
    if q["oof_f1_macro"] is None:
        return "-"
    return f"{q['oof_f1_macro']:.3f} [{q['oof_f1_macro_low']:.3f}, {q['oof_f1_macro_high']:.3f}]"


def _probe_cell(model: dict[str, Any]) -> str:
    """The linear probe's mean; a pose row has none (its features are not one backbone's)."""
    return "-" if model["probe"] is None else f"{model['probe']['mean']:.3f}"


def _int8_loss(model: dict[str, Any]) -> str:
    pooled = (model["int8"] or {}).get("pooled") or {}
    return _fmt(_scaled(pooled.get("int8_f1_drop"), 100), "+.1f")


def _machine_section(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
    load = "/".join(f"{v:.2f}" for v in m["load_at_start"])
    load_end = "/".join(f"{v:.2f}" for v in m["load_at_end"])
    best_rate = max([r["efficiency"]["best_gemm_gflops"],
                     *(a["gflops"] for a in r["efficiency"]["achieved"])])
    implied_ghz = best_rate / (min(m["cores"], m["threads"]) * m["fp32_flop_per_cycle"])
    return ["## Machine", "", *_table(["", ""], [
        ["CPU", m["cpu_model"]],
        ["cores available / threads used", f"{m['cores']} / {m['threads']} (torch "
         "set_num_threads and ORT intra_op_num_threads; ORT inter_op 1)"],
        ["clock", f"{m['clock_mhz']:.0f} MHz ({m['clock_source']})"],
        ["fp32 theoretical peak", f"{m['peak_gflops']:.0f} GFLOP/s = "
         f"{min(m['cores'], m['threads'])} cores x {m['clock_mhz'] / 1000:.2f} GHz x "
         f"{m['fp32_flop_per_cycle']} FLOP/cycle"],
        *([["measured vs peak", f"the best fp32 rate measured in this run, {best_rate:.0f} "
            f"GFLOP/s, implies a clock of at least {implied_ghz:.2f} GHz: the CPU boosts "
            "above the clock the OS reports"]] if best_rate > m["peak_gflops"] else []),
        ["CPU flags", flags],
        ["int8 dot-product instructions", "yes" if m["int8_dot_product"] else "no"],
        ["load average (1/5/15 min)", f"start {load}, end {load_end}"],
        ["versions", f"Python {m['python']}, torch {m['torch']}, onnxruntime "
         f"{m['onnxruntime']}"],
    ])]


def _goals_section(r: dict[str, Any]) -> list[str]:
    gs = goals(r)
    count = {status: sum(g.status == status for g in gs)
             for status in ("PASS", "MISS", "NOISY", "NOT MEASURED")}
    summary = (f"{count['PASS']} passed, {count['MISS']} missed, {count['NOISY']} too noisy to "
               f"decide, {count['NOT MEASURED']} not measured.")
    return ["## Goals", "", summary, "",
            *_table(["Goal", "Target", "Measured", "Result", "Why"],
                    [[g.goal, g.target, g.measured, f"**{g.status}**", g.why] for g in gs])]


def _phone_section(r: dict[str, Any]) -> list[str]:
    rows = []
    for model in shipped(r):
        q, name = model["quality"], model["name"]
        ort, int8 = latency(r, name, "ORT fp32", 1), latency(r, name, "ORT int8", 1)
        eager = latency(r, name, "torch eager", 1)
        rows.append([
            name, model["input"],
            f"not measured: {q['skipped']}" if q["skipped"] else _mean_sd(q), _oof_f1(q),
            _probe_cell(model), _fmt(q["reject_auroc"], ".3f"),
            _fmt(_scaled(q["known_accepted"], 100), ".0f", "%"),
            _fmt(_scaled(q["other_accepted"], 100), ".0f", "%"), _int8_loss(model),
            f"{model['fp32_bytes'] / MB:.1f} / {_fmt(_scaled(model['int8_bytes'], 1 / MB))}",
            f"{_fmt(ort and ort['p50_ms'])} / {_fmt(int8 and int8['p50_ms'])}",
            _fmt(eager and eager["p50_ms"]),
            f"{r['efficiency']['gflop_per_image'][name]:.3f}"])
    folds = r["settings"]["quality"]["folds"]
    return ["## Which model for the phone", "",
            f"Each row is the project's cross-validation job (`fitlens.train.run` with "
            f"`cv.folds={folds}`, `logger=csv`) on the same {folds} group folds (exercise "
            "variants never on both sides); section 5 has each row's command and folds. "
            "macro-F1 = mean ± sd of the folds' macro-F1 (known classes); OOF = the macro-F1 of "
            "every photo's out-of-fold prediction with its 90% bootstrap interval over exercise "
            "variants; probe = a logistic regression on the CNN's frozen pretrained features, "
            "same folds (the features' yardstick; none for pose rows, whose features are not "
            "one backbone's); reject AUROC = how well the reject output separates photos of "
            "other exercises from known ones; known / other accepted = the share of known photos "
            "answered with an exercise, and of other exercises' photos let through, at the "
            "threshold the job chose on its out-of-fold predictions; int8 loss = fp32 minus "
            "int8 macro-F1 of the exported files, out of fold (section 6). Latency at batch 1, "
            f"{r['machine']['threads']} threads, at each model's own input.", "",
            *_table(["Model", "input", "macro-F1", "OOF macro-F1 [90%]", "probe",
                     "reject AUROC", "known accepted", "other accepted",
                     "int8 loss (points)", "fp32 / int8 MB", "ORT fp32 / int8 ms",
                     "eager ms", "GFLOP/image"], rows)]


def _throughput_section(r: dict[str, Any]) -> list[str]:
    t = r["throughput"]
    rows = [[v["description"], f"{v['median_images_per_s']:.1f}",
             f"{min(v['images_per_s']):.1f} - {max(v['images_per_s']):.1f}",
             _fmt(_scaled(v.get("overhead_vs_bare"), 100), "+.1f", "%")]
            for v in t["variants"].values()]
    c = r["framework_cost"]
    real_ms = real_epoch_ms(r)
    cost_rows = [[t["variants"][k]["description"], f"{ms:.1f}",
                  _fmt(c["extra_ms_per_epoch"].get(k), "+.1f"),
                  _fmt(_scaled(c["extra_ms_per_epoch"].get(k), 100 / real_ms), "+.2f", "%")]
                 for k, ms in c["median_epoch_ms"].items()]
    p = r["input_pipeline"]
    loader_rows = [[f"DataLoader alone, num_workers={w}", f"{v:.1f}",
                    "yes" if p["loader_is_bottleneck"][w] else "no"]
                   for w, v in p["loader_images_per_s"].items()]
    loader_rows.append(["model step alone (batch in memory)", f"{p['step_images_per_s']:.1f}",
                        "-"])
    share = p.get("loader_share_workers0")
    return ["## 1. Framework overhead (training throughput)", "",
            f"{t['backbone']} (random init), {t['image_size']} px, batch {t['batch_size']}, "
            f"{t['train_images']} training images per epoch with the configured augmentations, "
            f"{t['epochs']} epochs per run of which the first is warm-up, {t['repeats']} "
            "interleaved repeats; an epoch lasts from its first batch to the next epoch's "
            "(epoch-end work included); images/s = median over the measured epochs. "
            "Validation is off in all three so they do the same work.", "",
            *_table(["Loop", "images/s (median)", "per epoch (min - max)", "overhead vs bare"],
                    rows),
            "Fixed cost: the same three loops and our classifier with the network replaced by "
            f"global pooling, on in-memory batches of the same shape ({c['steps_per_epoch']} "
            f"steps per epoch), median over {len(c['epoch_ms']['bare'])} epochs each. What "
            "Lightning adds per epoch here it adds at full size too; the last column puts it "
            f"against a real epoch ({real_ms:.0f} ms, bare loop above). The defaults' "
            "checkpoint here is tiny; writing the real model's is not in this number.", "",
            *_table(["Loop", "epoch ms (median)", "extra ms per epoch",
                     "of a real epoch"], cost_rows),
            "## 2. Input pipeline", "",
            *_table(["Stage", "images/s", "slower than the model step?"], loader_rows),
            *([f"With num_workers=0 (the config default) loading takes {share:.0%} of each "
               "training step.", ""] if share is not None else [])]


def _latency_section(r: dict[str, Any]) -> list[str]:
    rows = []
    for model in r["models"]:
        name = model["name"]
        eager1 = latency(r, name, "torch eager", 1)
        for runtime in ("torch eager", "ORT fp32", "ORT int8"):
            one, eight = latency(r, name, runtime, 1), latency(r, name, runtime, 8)
            rows.append([
                name, model["input"], runtime, _fmt(one and one["p50_ms"]),
                _fmt(one and one["p95_ms"]), _fmt(eight and eight["p50_ms"]),
                _fmt(eight and eight["p95_ms"]), _fmt(eight and eight["p50_ms"] / 8),
                _fmt(eager1 and one and eager1["p50_ms"] / one["p50_ms"], ".2f", "x")])
    settings = r["settings"]["latency"]
    return ["## 3. Inference latency", "",
            f"Random input of each model's size, {r['machine']['threads']} threads, "
            f"{settings['warmup']} warm-up calls excluded, then "
            + ", ".join(f"{n} at batch {b}" for b, n in settings["repeats"].items())
            + " timed calls. A pose model is the whole graph the app runs (BlazePose on the "
            "input resized to 256 px, the person crop, the CNN on it, the head); `blazepose` is "
            "its first part alone. Weights: "
            + ", ".join(f"{m['name']} {m['weights']}" for m in r["models"]) + ".", "",
            *_table(["Model", "input", "Runtime", "b1 p50 ms", "b1 p95 ms", "b8 p50 ms",
                     "b8 p95 ms", "b8 ms/image", "b1 speed-up vs eager"], rows)]


def _efficiency_section(r: dict[str, Any]) -> list[str]:
    e = r["efficiency"]
    libraries = list(r["gemm_gflops"])
    sizes = list(r["gemm_gflops"][libraries[0]])
    gemm = [[f"{n} x {n}", *(f"{r['gemm_gflops'][lib][n]:.0f}" for lib in libraries)]
            for n in sizes]
    rows = [[a["model"], a["runtime"], a["batch"], f"{a['gflop_per_image']:.3f}",
             f"{a['gflops']:.0f}", f"{a['of_peak']:.0%}", f"{a['of_gemm']:.0%}"]
            for a in e["achieved"]]
    return ["## 4. Efficiency (fp32)", "",
            f"Theoretical peak {e['peak_gflops']:.0f} GFLOP/s; best measured GEMM "
            f"{e['best_gemm_gflops']:.0f} GFLOP/s (best of 5 per size and library). FLOPs of "
            "convolutions and matrix multiplies counted with torch.utils.flop_counter "
            "(multiply-add = 2), divided by the p50 latency.", "",
            *_table(["GEMM", *(f"{lib} GFLOP/s" for lib in libraries)], gemm),
            *_table(["Model", "Runtime", "batch", "GFLOP/image", "GFLOP/s", "of peak",
                     "of best GEMM"], rows)]


def _quality_section(r: dict[str, Any]) -> list[str]:
    folds = r["settings"]["quality"]["folds"]
    rows = []
    for model in shipped(r):
        q = model["quality"]
        fold_f1 = q["fold_f1_macro"] + [None] * (folds - len(q["fold_f1_macro"]))
        rows.append([
            model["name"], f"`{q['command']}`", _fmt(q["epochs"], "d"),
            *(_fmt(f, ".3f") for f in fold_f1), _mean_sd(q), _oof_f1(q), _probe_cell(model),
            _fmt(q["reject_auroc"], ".3f"), _fmt(q["threshold"], ".2f"),
            _fmt(_scaled(q["known_accepted"], 100), ".0f", "%"),
            _fmt(_scaled(q["other_accepted"], 100), ".0f", "%"),
            _fmt(q["precision_at_threshold"], ".3f"),
            _fmt(_scaled(q["job_seconds"], 1 / 60)) if not q["skipped"]
            else f"skipped: {q['skipped']}"])
    seeds = sorted({m["quality"]["seed"] for m in shipped(r)} - {None})
    return ["## 5. Quality (cross-validation)", "",
            f"One cross-validation job per row (command below, plus `cv.folds={folds}` "
            "`logger=csv`): the same group folds for every row (seed "
            f"{'/'.join(map(str, seeds)) or '-'}, `data.folds={folds}`), each fold's model "
            "trained on the other folds (last epoch kept), then a refit on every photo, which "
            "is the model that would ship. The scores are the job's `oof/*` metrics: per-fold "
            "macro-F1 on the fold's known photos, the out-of-fold macro-F1 with its 90% "
            "bootstrap interval over exercise variants, reject AUROC, and the threshold chosen "
            "on the out-of-fold predictions (`conf/threshold`) with the share of known photos "
            "answered, of other exercises let through and the precision of the answers.", "",
            *_table(["Model", "command", "epochs", *(f"fold {i}" for i in range(folds)),
                     "mean ± sd", "OOF [90%]", "probe", "reject AUROC", "threshold",
                     "known accepted", "other accepted", "precision", "job min"], rows)]


def _int8_section(r: dict[str, Any]) -> list[str]:
    rows = []
    for model in shipped(r):
        int8 = model["int8"] or {}
        pooled = int8.get("pooled")
        # Parity is shown per model in section 7; here what kept numbers out.
        notes = sorted({n for f in int8.get("per_fold", []) for n in f["notes"]
                        if not n.startswith(PARITY_NOTE)})
        if model["quality"]["skipped"]:
            notes = [f"skipped: {model['quality']['skipped']}"]
        if pooled is None:
            rows.append([model["name"], "-", "-", "-", "-", "-", "-", "-", "-",
                         "; ".join(notes) or "-"])
            continue
        known = sum(f["known_images"] for f in int8["per_fold"] if "images" in f)
        rows.append([
            model["name"], f"{len(pooled['folds'])} of {model['quality']['folds']}",
            f"{known} + {pooled['images'] - known}",
            f"{_fmt(pooled['fp32_f1_macro'], '.3f')} -> {_fmt(pooled['int8_f1_macro'], '.3f')}",
            _fmt(_scaled(pooled["int8_f1_drop"], 100), "+.1f"),
            _fmt(_scaled(pooled["top1_agreement"], 100), ".0f", "%"),
            f"{_fmt(pooled['fp32_reject_auroc'], '.3f')} -> "
            f"{_fmt(pooled['int8_reject_auroc'], '.3f')}",
            f"{_fmt(pooled.get('keypoints_max_px'))} / "
            f"{_fmt(pooled.get('keypoints_mean_px'), '.2f')}",
            f"{_fmt(pooled.get('keypoints_visible_max_px'))} / "
            f"{_fmt(pooled.get('keypoints_visible_mean_px'), '.2f')}",
            "; ".join(notes) or "-"])
    calibration = r["settings"]["int8"]["calibration"]
    pose_folds = r["settings"]["int8"]["pose_folds"]
    return ["## 6. int8 out of fold", "",
            "Each measured fold's model exported (`export_onnx`, parity on the fold's test "
            "photos) and quantised (`quantize_int8`, static QDQ) as the export stage does, then "
            "both files run on that fold's test photos, known exercises and other ones; pooled "
            "over the folds, each photo is scored by the model that did not train on it. "
            "Calibration: "
            + ("every training photo of the fold (as the export stage)" if calibration is None
               else f"{calibration} of the fold's training photos (evenly spread, known and "
                    "other in proportion; the export stage uses all)")
            + ". Pose rows: "
            + ("every fold" if pose_folds is None else
               f"the first {pose_folds} fold(s) only (`--pose-int8-folds`; the pose graph's "
               "export and quantisation cost about a minute a fold)")
            + ". Keypoints = how far int8 puts each of the 33 landmarks from fp32, in pixels "
            "of the model input (max / mean over every landmark of every photo; visible = "
            "landmarks fp32 calls visible).", "",
            *_table(["Model", "folds", "photos (known + other)", "macro-F1 fp32 -> int8",
                     "loss (points)", "same top-1", "reject AUROC fp32 -> int8",
                     "keypoints max / mean px", "visible max / mean px", "notes"], rows)]


def _parity_cell(e: dict[str, Any]) -> str:
    if e["parity_max_abs_diff"] is None:
        return "-"
    verdict = "ok" if e["parity_max_abs_diff"] <= e["parity_tol"] else "**refused**"
    return f"{e['parity_max_abs_diff']:.2g} ({verdict})"


def _export_section(r: dict[str, Any]) -> list[str]:
    rows = [[e["model"], e["exports"], f"{e['export_seconds']:.1f}",
             _fmt(e["quantize_seconds"]), e["calibration_images"], _parity_cell(e),
             e["int8_error"] or "-"] for e in r["export_cost"]]
    tolerance = next((e["parity_tol"] for e in r["export_cost"] if e["parity_tol"]), None)
    return ["## 7. Export cost", "",
            "export + verify = `fitlens.export.onnx.export_onnx` (torch.onnx export, "
            "onnx.checker, load from bytes, parity with PyTorch on real photos); quantize = "
            "`fitlens.export.quantize.quantize_int8` (static QDQ, calibration on training "
            "photos). Median over the exports of this run. Parity = the largest |probability "
            "difference| between ONNX Runtime (app preprocessing) and PyTorch over the exports' "
            f"photos; above `export.parity_tol` ({_fmt(tolerance, 'g')}) the export stage "
            "refuses the file (the benchmark records it and measures on).", "",
            *_table(["Model", "exports", "export + verify s", "quantize s",
                     "calibration photos", "parity max /dp/", "int8 failure"], rows)]


def _time_section(r: dict[str, Any]) -> list[str]:
    rows = [[name, f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}"]
            for name, s in r["sections"].items()]
    return ["## 8. Where the time went", "",
            "Wall and CPU seconds of this process per section. CPU well below wall x threads "
            "means the section waited, for other processes on the same cores or for I/O.", "",
            *_table(["Section", "wall s", "CPU s"], rows)]


def _int8_note(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    speeds = []
    for model in r["models"]:
        fp32 = latency(r, model["name"], "ORT fp32", 1)
        int8 = latency(r, model["name"], "ORT int8", 1)
        if fp32 and int8:
            speeds.append(f"{model['name']} {fp32['p50_ms'] / int8['p50_ms']:.2f}x")
    here = ("has int8 dot-product instructions (" + ", ".join(
        k for k in ("avx512_vnni", "avx_vnni", "amx_int8") if m["flags"].get(k)) + ")"
        if m["int8_dot_product"] else "has no int8 dot-product instructions (VNNI)")
    refused = [f"{e['model']} ({e['parity_max_abs_diff']:.2g})" for e in r["export_cost"]
               if e["parity_max_abs_diff"] is not None
               and e["parity_max_abs_diff"] > e["parity_tol"]]
    return ["## Notes", "",
            *([f"- Export parity: the export stage would refuse {', '.join(refused)}: ONNX "
               "Runtime and PyTorch differ by more than `export.parity_tol` in probability on "
               "real photos (section 7)."] if refused else []),
            f"- int8 on this CPU: it {here}. ORT int8 vs ORT fp32 at batch 1: "
            f"{', '.join(speeds) or '-'} (above 1x = int8 faster). int8 pays off on CPUs with "
            "int8 dot-product instructions: x86 with VNNI, and phones with ARMv8.2 dot-product "
            "(SDOT/UDOT; most phone SoCs since about 2018), where a QDQ model runs int8 "
            "kernels; without them int8 mainly saves download size and memory.",
            f"- Load: other processes share these {m['cores']} cores; the load average at start "
            "and end is in the machine table, and section 8 shows where wall time ran ahead of "
            "CPU time. Timing numbers are medians to resist that, not immune to it.",
            f"- Run took {r['seconds_total'] / 60:.1f} min"
            + (" in --quick mode (tiny images, 2 folds, pose rows with a random-init CNN: a "
               "smoke test, not numbers to quote)." if r["quick"] else "."), ""]


def render_markdown(results: dict[str, Any]) -> str:
    lines = ["# Fitlens benchmark", "",
             f"`{results['command']}` — started {results['started_at']}.", "",
             *_machine_section(results), *_goals_section(results), *_phone_section(results),
             *_throughput_section(results), *_latency_section(results),
             *_efficiency_section(results), *_quality_section(results),
             *_int8_section(results), *_export_section(results), *_time_section(results),
             *_int8_note(results)]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/report.json`` (results + goals) and ``out/report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    full = {**results, "goals": [asdict(g) for g in goals(results)]}
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path
