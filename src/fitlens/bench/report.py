"""``report.json`` (every number) and ``report.md`` (the tables and the goals, in words) from one
results dict of :func:`fitlens.bench.suite.run`.

The goals are the issue's; each is PASS, MISS or NOT MEASURED with a sentence saying what was
measured and, for a miss, what the numbers point at. Nothing here measures anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MB = 1e6
OVERHEAD_MAX = 0.03
ORT_SPEEDUP_MIN = 1.8
INT8_RATIO_MIN = 3.9
INT8_DROP_MAX = 0.01
PEAK_SHARE_MIN = 0.75
#: Per-epoch images/s spreading wider than this ((max - min) / median) swamps a 3% goal.
NOISE_MAX = 0.10
EFFICIENCY_BACKBONE = "resnet18"


@dataclass(frozen=True)
class Goal:
    goal: str
    target: str
    measured: str
    status: str  # PASS, MISS, NOISY (the measurement cannot decide) or NOT MEASURED
    why: str


def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _latency(results: dict[str, Any], backbone: str, runtime: str, batch: int) -> dict | None:
    return next((r for r in results["latency"] if r["backbone"] == backbone
                 and r["runtime"] == runtime and r["batch"] == batch), None)


def _spread(values: Sequence[float]) -> float:
    return (max(values) - min(values)) / float(np.median(values))


def _real_epoch_ms(results: dict[str, Any]) -> float:
    t = results["throughput"]
    return t["train_images"] / t["variants"]["bare"]["median_images_per_s"] * 1000


def estimated_overhead(results: dict[str, Any], variant: str) -> float:
    """The fixed-cost probe's extra milliseconds per epoch over a real (bare) epoch's."""
    return results["framework_cost"]["extra_ms_per_epoch"][variant] / _real_epoch_ms(results)


def _overhead_goal(results: dict[str, Any]) -> Goal:
    name, target = "Framework overhead (Lightning vs bare loop)", f"<= {OVERHEAD_MAX:.0%}"
    t = results["throughput"]
    variants = t["variants"]
    overhead = variants["lightning"]["overhead_vs_bare"]
    estimate = estimated_overhead(results, "lightning")
    extra = results["framework_cost"]["extra_ms_per_epoch"]["lightning"]
    measured = (f"measured {overhead:+.1%} ({variants['lightning']['median_images_per_s']:.1f} "
                f"vs {variants['bare']['median_images_per_s']:.1f} images/s); fixed-cost "
                f"estimate {estimate:+.2%} ({extra:+.1f} ms per {_real_epoch_ms(results):.0f} "
                "ms epoch)")
    why = (f"measured: median over {len(variants['bare']['images_per_s'])} epochs "
           f"({t['repeats']} interleaved repeats) at full size; estimate: Lightning's extra "
           "time per epoch with the network's compute taken out (section 1), over the real "
           "epoch time. Both include our training_step's metric updates and logging")
    spread = max(_spread(variants[k]["images_per_s"]) for k in ("bare", "lightning"))
    if spread <= NOISE_MAX:
        return Goal(name, target, measured, _status(overhead <= OVERHEAD_MAX), why)
    if "lightning" not in results["framework_cost"]["extra_ms_per_epoch"]:
        return Goal(name, target, measured, "NOISY", why)
    return Goal(name, target, measured, _status(estimate <= OVERHEAD_MAX),
                f"decided on the estimate: epochs of the same loop at full size differed by up "
                f"to {spread:.0%} in images/s (other work on this host, see the load average), "
                f"too much to resolve {OVERHEAD_MAX:.0%} directly; {why}")


def _speedup_goals(results: dict[str, Any]) -> list[Goal]:
    goals = []
    for model in results["models"]:
        backbone = model["backbone"]
        eager = _latency(results, backbone, "torch eager", 1)
        ort = _latency(results, backbone, "ORT fp32", 1)
        if eager is None or ort is None:
            continue
        speedup = eager["p50_ms"] / ort["p50_ms"]
        ok = speedup >= ORT_SPEEDUP_MIN
        why = f"p50 {eager['p50_ms']:.1f} ms eager vs {ort['p50_ms']:.1f} ms ORT fp32"
        eager8 = _latency(results, backbone, "torch eager", 8)
        ort8 = _latency(results, backbone, "ORT fp32", 8)
        if eager8 and ort8:
            why += f"; at batch 8 {eager8['p50_ms'] / ort8['p50_ms']:.2f}x"
        goals.append(Goal(f"ORT fp32 vs torch eager, batch 1: {backbone}",
                          f">= {ORT_SPEEDUP_MIN}x faster", f"{speedup:.2f}x", _status(ok), why))
    return goals


def _size_goals(results: dict[str, Any]) -> list[Goal]:
    goals = []
    for model in results["models"]:
        ratio = model["fp32_bytes"] / model["int8_bytes"]
        ok = ratio >= INT8_RATIO_MIN
        by_type = model["int8_bytes_by_type"]
        other = sum(v for k, v in by_type.items() if k not in ("int8", "uint8"))
        why = (f"{model['fp32_bytes'] / MB:.1f} MB -> {model['int8_bytes'] / MB:.1f} MB")
        if not ok:
            parts = ", ".join(f"{k} {v / MB:.2f} MB" for k, v in sorted(by_type.items()))
            why += (f"; besides int8 weights the file stores {other / MB:.2f} MB of other "
                    f"tensors ({parts}: int32 biases, fp32 per-channel scales) plus the graph "
                    "of Q/DQ nodes")
        goals.append(Goal(f"int8 file size: {model['backbone']}",
                          f">= {INT8_RATIO_MIN}x smaller", f"{ratio:.2f}x", _status(ok), why))
    return goals


def _drop_goals(results: dict[str, Any]) -> list[Goal]:
    goals = []
    for model in results["models"]:
        quality, backbone = model["quality"], model["backbone"]
        name, target = f"int8 macro-F1 loss: {backbone}", f"<= {INT8_DROP_MAX * 100:.0f} point"
        pooled = quality["pooled"]
        if pooled is None:
            reason = quality["skipped"] or "no fold produced both an fp32 and an int8 score"
            goals.append(Goal(name, target, "-", "NOT MEASURED", reason))
            continue
        drop = pooled["int8_f1_drop"]
        ok = drop <= INT8_DROP_MAX
        measured = (f"{drop * 100:+.1f} points ({pooled['fp32_f1_macro']:.3f} -> "
                    f"{pooled['int8_f1_macro']:.3f}); int8 changed "
                    f"{1 - pooled['top1_agreement']:.0%} of top-1 predictions")
        why = (f"out-of-fold: all {pooled['images']} test images of {quality['folds_run']} "
               f"fold(s), each scored by the fold model that did not train on it (per-fold "
               f"loss: mean {quality['int8_f1_drop_mean'] * 100:+.1f}, worst "
               f"{quality['int8_f1_drop_max'] * 100:+.1f} points)")
        if not ok:
            images = [f["test_images"] for f in quality["per_fold"]]
            why += (f"; {pooled['images']} photos in all ({min(images)}-{max(images)} a fold), "
                    f"so one changed prediction is worth about {100 / pooled['images']:.0f} "
                    "point(s) of accuracy")
        goals.append(Goal(name, target, measured, _status(ok), why))
    return goals


def _efficiency_goal(results: dict[str, Any]) -> Goal:
    name = f"{EFFICIENCY_BACKBONE} inference efficiency (fp32)"
    target = f">= {PEAK_SHARE_MIN:.0%} of theoretical peak"
    rows = [a for a in results["efficiency"]["achieved"] if a["backbone"] == EFFICIENCY_BACKBONE]
    if not rows:
        return Goal(name, target, "-", "NOT MEASURED",
                    f"{EFFICIENCY_BACKBONE} not among --backbones")
    best = max(rows, key=lambda a: a["gflops"])
    eff = results["efficiency"]
    ok = best["of_peak"] >= PEAK_SHARE_MIN
    measured = (f"{best['of_peak']:.0%} of peak ({best['gflops']:.0f} of "
                f"{eff['peak_gflops']:.0f} GFLOP/s), {best['of_gemm']:.0%} of best GEMM "
                f"({eff['best_gemm_gflops']:.0f} GFLOP/s)")
    why = f"best fp32 case: {best['runtime']}, batch {best['batch']}"
    if best["of_peak"] > 1:
        why += ("; above 100%: the CPU runs faster than the clock the OS reports (boost), so "
                "the theoretical peak understates this machine and the best GEMM is the "
                "tighter yardstick")
    if not ok:
        gemm_share = eff["best_gemm_gflops"] / eff["peak_gflops"]
        why += (f"; the best GEMM itself reached {gemm_share:.0%} of the peak in this run, the "
                f"model {best['of_gemm']:.0%} of that GEMM: the first gap is the machine "
                "(clock, load), the second the model's kernels")
    return Goal(name, target, measured, _status(ok), why)


def goals(results: dict[str, Any]) -> list[Goal]:
    return [_overhead_goal(results), *_speedup_goals(results), *_size_goals(results),
            *_drop_goals(results), _efficiency_goal(results)]


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return [*lines, ""]


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
    for model in r["models"]:
        q, b = model["quality"], model["backbone"]
        if q["skipped"]:
            f1 = f"not measured: {q['skipped']}"
        else:
            f1 = (f"{q['f1_macro_mean']:.3f}" + (f" ± {q['f1_macro_std']:.3f}"
                                                  if q["f1_macro_std"] is not None else "")
                  + f" ({q['folds_run']} fold(s))")
        other = q["other_accepted_fraction"]
        ort = _latency(r, b, "ORT fp32", 1)
        int8 = _latency(r, b, "ORT int8", 1)
        eager = _latency(r, b, "torch eager", 1)
        pooled = q["pooled"] or {}
        probe = model.get("probe")
        rows.append([
            b, f1, _fmt(probe and probe["mean"], ".3f"),
            _fmt(_scaled(pooled.get("int8_f1_drop"), 100), "+.1f"),
            _fmt(_scaled(pooled.get("top1_agreement"), 100), ".0f", "%"),
            _fmt(q["threshold_mean"], ".2f"), _fmt(_scaled(other, 100), ".0f", "%"),
            f"{model['fp32_bytes'] / MB:.1f}", f"{model['int8_bytes'] / MB:.1f}",
            _fmt(ort and ort["p50_ms"]), _fmt(int8 and int8["p50_ms"]),
            _fmt(eager and eager["p50_ms"]),
            f"{r['efficiency']['gflop_per_image'][b]:.3f}"])
    return ["## Which model for the phone", "",
            f"Group {r['settings']['quality']['folds']}-fold cross-validated macro-F1 of the "
            f"training job (`fitlens.train.run`, `experiment={_experiment(r)}`) on each test "
            "fold (mean ± sd); probe = the same folds scored by a logistic regression on the "
            "frozen pretrained features (`fitlens.bench.probe`): what the features allow "
            "without any training job; "
            "int8 loss = fp32 minus int8 macro-F1 of the exported files over all folds' test "
            "images (out-of-fold), and how often both files predict the same class; threshold = "
            "the export stage's `choose_threshold` (target precision "
            f"{r['settings']['quality']['target_precision']}) on each fold's held-out images, "
            "since cv5 keeps no validation split; \"other\" = photos of other exercises the "
            "fp32 model still answers with confidence at that threshold (lower is better). "
            f"Latency at batch 1, {r['image_size']} px, {r['machine']['threads']} threads.", "",
            *_table(["Backbone", "macro-F1", "probe macro-F1", "int8 loss (points)",
                     "int8 = fp32 top-1",
                     "threshold",
                     "\"other\" accepted", "fp32 MB", "int8 MB", "ORT fp32 ms", "ORT int8 ms",
                     "eager ms", "GFLOP/image"], rows)]


def _throughput_section(r: dict[str, Any]) -> list[str]:
    t = r["throughput"]
    rows = [[v["description"], f"{v['median_images_per_s']:.1f}",
             f"{min(v['images_per_s']):.1f} - {max(v['images_per_s']):.1f}",
             _fmt(_scaled(v.get("overhead_vs_bare"), 100), "+.1f", "%")]
            for v in t["variants"].values()]
    c = r["framework_cost"]
    real_ms = _real_epoch_ms(r)
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
        b = model["backbone"]
        eager1 = _latency(r, b, "torch eager", 1)
        for runtime in ("torch eager", "ORT fp32", "ORT int8"):
            one, eight = _latency(r, b, runtime, 1), _latency(r, b, runtime, 8)
            rows.append([
                b, runtime, _fmt(one and one["p50_ms"]), _fmt(one and one["p95_ms"]),
                _fmt(eight and eight["p50_ms"]), _fmt(eight and eight["p95_ms"]),
                _fmt(eight and eight["p50_ms"] / 8),
                _fmt(eager1 and one and eager1["p50_ms"] / one["p50_ms"], ".2f", "x")])
    settings = r["settings"]["latency"]
    return ["## 3. Inference latency", "",
            f"{r['image_size']} px, random input, {r['machine']['threads']} threads, "
            f"{settings['warmup']} warm-up calls excluded, then "
            + ", ".join(f"{n} at batch {b}" for b, n in settings["repeats"].items())
            + " timed calls. Weights: "
            + ", ".join(f"{m['backbone']} {m['weights']}" for m in r["models"]) + ".", "",
            *_table(["Backbone", "Runtime", "b1 p50 ms", "b1 p95 ms", "b8 p50 ms", "b8 p95 ms",
                     "b8 ms/image", "b1 speed-up vs eager"], rows)]


def _efficiency_section(r: dict[str, Any]) -> list[str]:
    e = r["efficiency"]
    libraries = list(r["gemm_gflops"])
    sizes = list(r["gemm_gflops"][libraries[0]])
    gemm = [[f"{n} x {n}", *(f"{r['gemm_gflops'][lib][n]:.0f}" for lib in libraries)]
            for n in sizes]
    rows = [[a["backbone"], a["runtime"], a["batch"], f"{a['gflop_per_image']:.3f}",
             f"{a['gflops']:.0f}", f"{a['of_peak']:.0%}", f"{a['of_gemm']:.0%}"]
            for a in e["achieved"]]
    return ["## 4. Efficiency (fp32)", "",
            f"Theoretical peak {e['peak_gflops']:.0f} GFLOP/s; best measured GEMM "
            f"{e['best_gemm_gflops']:.0f} GFLOP/s (best of 5 per size and library). FLOPs of "
            "convolutions and matrix multiplies counted with torch.utils.flop_counter "
            "(multiply-add = 2), divided by the p50 latency.", "",
            *_table(["GEMM", *(f"{lib} GFLOP/s" for lib in libraries)], gemm),
            *_table(["Backbone", "Runtime", "batch", "GFLOP/image", "GFLOP/s", "of peak",
                     "of best GEMM"], rows)]


def _folds_section(r: dict[str, Any]) -> list[str]:
    rows = []
    for model in r["models"]:
        for f in model["quality"]["per_fold"]:
            other = (f"{f['other_accepted']}/{f['other_images']}" if f["other_images"]
                     else "-")
            rows.append([model["backbone"], f["fold"], f["test_images"],
                         f"{f['f1_macro']:.3f}", f"{f['accuracy']:.3f}",
                         _fmt(f["onnx_fp32_f1_macro"], ".3f"),
                         _fmt(f["onnx_int8_f1_macro"], ".3f"), _fmt(f["threshold"], ".2f"),
                         other, f"{f['train_seconds']:.0f}", "; ".join(f["notes"]) or "-"])
    return ["## 5. Quality per fold", "",
            f"`experiment={_experiment(r)}`, {_epochs(r)} epoch(s) per fold, the last one tested "
            "(cv5: every non-test group trains, no early stopping).", "",
            *_table(["Backbone", "fold", "test images", "macro-F1", "accuracy", "ONNX fp32 F1",
                     "ONNX int8 F1", "threshold", "\"other\" accepted", "train s", "notes"],
                    rows)]


def _experiment(r: dict[str, Any]) -> str:
    recipe = r["settings"]["quality"].get("recipe")
    return f"[cv5,{recipe}]" if recipe else "cv5"


def _epochs(r: dict[str, Any]) -> str:
    used = sorted({m["quality"].get("epochs") for m in r["models"]} - {None})
    return "/".join(str(e) for e in used) or "-"


def _export_section(r: dict[str, Any]) -> list[str]:
    rows = [[e["backbone"], e["exports"], f"{e['export_seconds']:.1f}",
             f"{e['quantize_seconds']:.1f}"] for e in r["export_cost"]]
    return ["## 6. Export cost", "",
            "export + verify = `fitlens.export.onnx.export_onnx` (torch.onnx export, "
            "onnx.checker, load from bytes, parity with PyTorch on the test images); quantize = "
            "`fitlens.export.quantize.quantize_int8` (static QDQ, calibration on the training "
            "images). Median over the exports of this run.", "",
            *_table(["Backbone", "exports", "export + verify s", "quantize s"], rows)]


def _int8_note(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    speeds = []
    for model in r["models"]:
        fp32 = _latency(r, model["backbone"], "ORT fp32", 1)
        int8 = _latency(r, model["backbone"], "ORT int8", 1)
        if fp32 and int8:
            speeds.append(f"{model['backbone']} {fp32['p50_ms'] / int8['p50_ms']:.2f}x")
    here = ("has int8 dot-product instructions (" + ", ".join(
        k for k in ("avx512_vnni", "avx_vnni", "amx_int8") if m["flags"].get(k)) + ")"
        if m["int8_dot_product"] else "has no int8 dot-product instructions (VNNI)")
    return ["## Notes", "",
            f"- int8 on this CPU: it {here}. ORT int8 vs ORT fp32 at batch 1: "
            f"{', '.join(speeds) or '-'} (above 1x = int8 faster). int8 pays off on CPUs with "
            "int8 dot-product instructions: x86 with VNNI, and phones with ARMv8.2 dot-product "
            "(SDOT/UDOT; most phone SoCs since about 2018), where a QDQ model runs int8 "
            "kernels; without them int8 mainly saves download size and memory.",
            f"- Load: other processes share these {m['cores']} cores; the load average at start "
            "and end is in the machine table. Timing numbers are medians to resist that, not "
            "immune to it.",
            f"- Run took {r['seconds_total'] / 60:.1f} min"
            + (" in --quick mode (tiny images, one fold: smoke test, not numbers to quote)."
               if r["quick"] else "."), ""]


def render_markdown(results: dict[str, Any]) -> str:
    lines = ["# Fitlens benchmark", "",
             f"`{results['command']}` — started {results['started_at']}.", "",
             *_machine_section(results), *_goals_section(results), *_phone_section(results),
             *_throughput_section(results), *_latency_section(results),
             *_efficiency_section(results), *_folds_section(results),
             *_export_section(results), *_int8_note(results)]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/report.json`` (results + goals) and ``out/report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    full = {**results, "goals": [asdict(g) for g in goals(results)]}
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path
