"""Score an event detector (``train.py --task events``) over whole SPRSound recordings: events, frames and records.

    python benchmarks/event_detection.py --model runs/cv/fold0/events --cv_fold 0          # fold 0's validation patients
    python benchmarks/event_detection.py --model runs/cv/fold0/events --split inter_test   # the inter-patient test
    python benchmarks/event_detection.py --model runs/cv/fold0/events --cv_fold 0 --model runs/cv/fold1/events --cv_fold 1
    python benchmarks/event_detection.py --model runs/cv/fold0/events --latency            # CPU ms and checkpoint MB
    python benchmarks/event_detection.py --choose_decision --model runs/cv/fold0/events --cv_fold 0 --model ... --cv_fold 1

Each ``--model`` is scored on the validation patients of the ``--cv_fold`` given with it (in order: the k-th
``--cv_fold`` goes with the k-th ``--model``; the patient folds of ``hub_dataset/sprsound_folds.json``, as
``train.py --cv_fold``), or, without ``--cv_fold``, on ``--split`` (default ``inter_test``). Every recording is read
whole by the ``respiratory-event-detection`` pipeline (`run_detector`, the path a user's call takes), and its events
and record label come from ``detection_respstf.detect`` with the detector's ``config.detection`` (or ``--decision``).
The measures are those of ``respstf.hub_dataset.detection_metrics`` (sed_eval segment-based 1 s and event-based
F1 / error rate, by event type and adventitious-vs-normal; annotated events found at 0.1 s frames, exact type and
kind; the adventitious-vs-normal frame F1; the official Score of the derived Task 2-2 and 2-1 record labels; normal
recordings called Poor Quality). Several evaluations print one table, a column each and their mean ± sd (the found
counts pooled over the columns), appended to ``--results`` (default ``benchmarks/RESULTS.md``).

Each recording's frame probabilities (the pipeline's ``frame_scores``, 4 decimals) are kept in
``<model>/frame_probabilities_<split>.npz`` (``<split>``: ``fold<k>`` for a fold's validation patients), with the
checkpoint's SHA-256, and read back while the weights are unchanged (``--no_cache``: neither read nor written); the
events and record labels scored are ``detect``'s on them. ``--choose_decision`` pools the given folds' probabilities
(each fold's recordings scored by the model that did not train on them) and searches the record decision (`choose_decision`: ``evidence_seconds`` and the
``record_logit_adjustment`` offsets) for the best mean of the Task 2-1 and 2-2 Scores with at most 3 % of the normal
recordings called Poor Quality; it prints the chosen ``detection`` settings as JSON, for ``--decision`` or a config.

``--latency``: the median over ``--latency_runs`` runs, on ``--threads`` torch threads (default 2), of the whole path for
one real 15.4 s recording (file -> pipeline -> events and record label), and the size of ``model.safetensors``;
targets: <= 150 ms and <= 5 MB.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

import respstf.feature_extraction  # noqa: F401  (registers the extractor with the Auto classes)
from respstf import hub_dataset, training
from respstf.hub_dataset import detection_metrics
from respstf.modeling import RespiratoryEventDetectionPipeline, RespSTFConfig, detection_respstf, inference_respstf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = Path(os.environ.get("RESPSTF_DATA_DIR", ROOT.parent / "shared" / "data")) / "sprsound"
# A real 15.4 s recording as the release has it (the example folder's original WAV).
LATENCY_RECORDING = DEFAULT_DATASET / "example_original_wav" / "65097128_5.6_1_p1_2242.wav"
TARGETS = {"latency_ms": 150.0, "checkpoint_mb": 5.0, "wheezes_found": 0.90, "crackles_found": 0.90, "frame_f1": 0.80}
# The record decision's search grid (`choose_decision`).
EVIDENCE_SECONDS_GRID = (0.5, 1.0, 2.0, 3.0)
OFFSET_GRID = tuple(np.round(np.arange(-3.0, 3.01, 0.5), 2))
MAX_NORMALS_POOR_QUALITY = 0.03


# -- running the detector ------------------------------------------------------------------------------------------


def load_detector(path: str | Path) -> RespiratoryEventDetectionPipeline:
    """The ``respiratory-event-detection`` pipeline of a saved detector (this package's code, no remote code; the
    folder checked as the demo checks it)."""
    return inference_respstf.load_detector(path).pipeline


def detector_pipeline(model, extractor) -> RespiratoryEventDetectionPipeline:
    """The pipeline over a loaded detector and its feature extractor."""
    return RespiratoryEventDetectionPipeline(model=model.eval(), feature_extractor=extractor)


def run_detector(detector: RespiratoryEventDetectionPipeline, audio) -> tuple[np.ndarray, float, dict]:
    """One whole recording through the pipeline: ``(frame probabilities (frames, classes), seconds per frame, the
    pipeline's output)``. ``audio``: anything the pipeline takes (a file, ``{"raw", "sampling_rate"}``)."""
    result = detector(audio, return_frame_scores=True)
    scores = result.pop("frame_scores")
    return np.asarray(scores["scores"], dtype=np.float32).reshape(-1, len(scores["labels"])), scores["frame_seconds"], result


# -- recordings and their cached frame probabilities ----------------------------------------------------------------


def load_recordings(dataset: str | Path, split: str = "inter_test", cv_fold: int | None = None):
    """The record rows scored: fold ``cv_fold``'s validation patients of train (``training.carve_validation``, as
    ``train.py --cv_fold``), else the split ``split``."""
    source_split = "train" if cv_fold is not None else split
    rows = hub_dataset.load_sprsound(dataset, task="22", splits=[source_split], decode=False, progress=False)[source_split]
    if cv_fold is None:
        return rows
    source = hub_dataset.DatasetSource.detect(dataset)
    return training.carve_validation(rows, source, "task22", fraction=0.2, seed=42, cv_fold=cv_fold)["validation"]


def split_tag(split: str, cv_fold: int | None) -> str:
    return f"fold{cv_fold}" if cv_fold is not None else split


def cache_path(model_dir: str | Path, tag: str) -> Path:
    return Path(model_dir) / f"frame_probabilities_{tag}.npz"


def checkpoint_sha256(model_dir: str | Path) -> str | None:
    weights = Path(model_dir) / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


def save_frame_probabilities(path: Path, cached: Mapping) -> None:
    probabilities = cached["probabilities"]
    np.savez_compressed(
        path, probabilities=np.concatenate(probabilities) if probabilities else np.zeros((0, len(cached["labels"]))),
        offsets=np.cumsum([0] + [len(p) for p in probabilities]), recording_ids=np.array(cached["recording_ids"]),
        record_labels=np.array(cached["record_labels"]), durations=np.array(cached["durations"]),
        labels=np.array(cached["labels"]), frame_seconds=cached["frame_seconds"],
        checkpoint_sha256=cached.get("checkpoint_sha256") or "")


def load_frame_probabilities(path: str | Path) -> dict:
    """A cache file as ``{"probabilities": [(frames, classes) per recording], "recording_ids", "record_labels" (Task 2-2
    names), "durations", "labels" (class names, id order), "frame_seconds", "checkpoint_sha256"}``."""
    with np.load(path) as data:
        offsets = data["offsets"]
        return {"probabilities": [data["probabilities"][a:b] for a, b in zip(offsets, offsets[1:])],
                "recording_ids": data["recording_ids"].tolist(), "record_labels": data["record_labels"].tolist(),
                "durations": data["durations"].tolist(), "labels": data["labels"].tolist(),
                "frame_seconds": float(data["frame_seconds"]), "checkpoint_sha256": str(data["checkpoint_sha256"]) or None}


def frame_probabilities(detector: RespiratoryEventDetectionPipeline, rows, cache: Path | None = None,
                        checkpoint: str | None = None) -> dict:
    """Every row's frame probabilities (`load_frame_probabilities`' form): read from ``cache`` when it holds these
    recordings for this ``checkpoint`` (SHA-256), else computed with `run_detector` (and written to ``cache``)."""
    ids = list(rows["recording_id"])
    if cache is not None and cache.is_file():
        cached = load_frame_probabilities(cache)
        if cached["recording_ids"] == ids and checkpoint and cached["checkpoint_sha256"] == checkpoint:
            print(f"frame probabilities read back from {cache}", flush=True)
            return cached
    config = detector.model.config
    cached = {"probabilities": [], "recording_ids": ids, "record_labels": [], "durations": [],
              "labels": [config.id2label[i] for i in range(config.num_labels)], "frame_seconds": None,
              "checkpoint_sha256": checkpoint}
    started = time.perf_counter()
    for index, row in enumerate(rows):
        waveform, rate = hub_dataset.read_audio(row["audio"])
        with warnings.catch_warnings():  # a short or quiet recording is scored as it is
            warnings.filterwarnings("ignore", message=r"audio input", category=UserWarning)
            probabilities, cached["frame_seconds"], _ = run_detector(detector, {"raw": waveform, "sampling_rate": rate})
        cached["probabilities"].append(probabilities)
        cached["record_labels"].append(hub_dataset.RECORD_LABELS[row["task22"]])
        cached["durations"].append(len(waveform) / rate)
        if (index + 1) % 100 == 0:
            print(f"  {index + 1}/{len(ids)} recordings, {time.perf_counter() - started:.0f} s", flush=True)
    if cached["frame_seconds"] is None:
        cached["frame_seconds"] = detector.frame_seconds
    if cache is not None:
        save_frame_probabilities(cache, cached)
    return cached


# -- scoring ----------------------------------------------------------------------------------------------------------


def decision_of(config, decision: Mapping | None = None) -> dict:
    """The detector's ``config.detection`` with ``decision``'s ``evidence_seconds``/``record_logit_adjustment``."""
    detection = dict(config.detection)
    for key in ("evidence_seconds", "record_logit_adjustment"):
        if decision and key in decision:
            detection[key] = decision[key]
    return detection


def score_probabilities(cached: Mapping, rows, detection: Mapping) -> dict:
    """``detection_metrics.evaluate_detection`` of the events and record labels ``detect`` makes of the cached frame
    probabilities with ``detection``."""
    id2label = dict(enumerate(cached["labels"]))
    outputs = [detection_respstf.detect(p, id2label, detection, cached["frame_seconds"], d)
               for p, d in zip(cached["probabilities"], cached["durations"])]
    result = detection_metrics.evaluate_detection(
        [detection_metrics.annotated_events(events) for events in rows["events"]],
        [detection_metrics.detected_events(o["events"]) for o in outputs], cached["record_labels"],
        [o["record_label"] for o in outputs], cached["durations"])
    result["frame_seconds"] = cached["frame_seconds"]
    return result


def score_detector(model, extractor, rows, cache: Path | None = None, checkpoint: str | None = None,
                   decision: Mapping | None = None) -> dict:
    """Score a loaded detector on record ``rows`` (`load_recordings`): every measure of
    ``detection_metrics.evaluate_detection``, with ``"seconds"`` (wall time) and ``"detection"`` (the decision used)."""
    started = time.perf_counter()
    cached = frame_probabilities(detector_pipeline(model, extractor), rows, cache, checkpoint)
    detection = decision_of(model.config, decision)
    result = score_probabilities(cached, rows, detection)
    result.update(seconds=time.perf_counter() - started, detection=detection)
    return result


# -- choosing the record decision --------------------------------------------------------------------------------------


def choose_decision(probabilities: Sequence[np.ndarray], record_labels: Sequence, id2label: Mapping[int, str],
                    detection: Mapping, frame_seconds: float, evidence_seconds: Sequence[float] = EVIDENCE_SECONDS_GRID,
                    offsets: Sequence[float] = OFFSET_GRID,
                    max_normals_poor_quality: float = MAX_NORMALS_POOR_QUALITY) -> dict:
    """The record decision (``detection``'s ``evidence_seconds`` and ``record_logit_adjustment``) that maximises the
    mean of the Task 2-1 and 2-2 Scores of the derived record labels over recordings (out-of-fold frame probabilities,
    ``(frames, classes)`` each, and their annotated Task 2-2 classes), among those calling at most
    ``max_normals_poor_quality`` of the normal recordings Poor Quality; each ``evidence_seconds`` with every
    (continuous, discontinuous, poor quality) triple of ``offsets``. Ties go to the smaller offsets, then to the
    evidence length nearest ``detection``'s. Where no setting meets the limit, the one calling fewest normals Poor
    Quality (then the best Score) is returned with ``constraint_met`` False.

    The search applies ``detection_respstf``'s own functions to arrays (evidence per recording, the log-odds shift,
    ``record_scores``, the first most probable class as ``detect`` takes it), and the chosen decision is checked by
    running ``detect`` on every recording.

    Returns:
        ``{"detection": the full detection settings, "evidence_seconds", "record_logit_adjustment", "score_22",
        "score_21", "objective", "normals_called_poor_quality", "normals", "constraint_met", "candidates",
        "before": the same figures for ``detection`` as given}``.
    """
    references = [detection_metrics.record_class_name(label) for label in record_labels]
    if len(references) != len(probabilities):
        raise ValueError(f"{len(probabilities)} recordings of frame probabilities but {len(references)} record labels.")
    kinds = detection_respstf.EVIDENCE_KINDS
    names = list(detection["record_labels"])
    default_seconds = detection.get("evidence_seconds", detection_respstf.DEFAULT_EVIDENCE_SECONDS)

    def figures(predicted: Sequence[str]) -> dict:
        scores = detection_metrics.record_label_scores(predicted, references)
        called = scores["normals_called_poor_quality"]
        return {"score_22": scores["22"]["score"], "score_21": scores["21"]["score"],
                "objective": (scores["22"]["score"] + scores["21"]["score"]) / 2, "normals_called_poor_quality": called,
                "normals": scores["normals"], "constraint_met": called <= max_normals_poor_quality * max(scores["normals"], 1)}

    best, best_key, candidates = None, None, 0
    for seconds in evidence_seconds:
        rule = {**detection, "evidence_seconds": float(seconds)}
        evidence = np.array([[detection_respstf.record_evidence(p, id2label, rule, frame_seconds)[kind] for kind in kinds]
                             for p in probabilities])
        for shift in itertools.product(offsets, repeat=len(kinds)):
            adjusted = detection_respstf.adjust_evidence(dict(zip(kinds, evidence.T)), dict(zip(kinds, shift)))
            scores = detection_respstf.record_scores(adjusted, rule)
            predicted = [names[i] for i in np.stack([scores[name] for name in names]).argmax(0)]
            result = figures(predicted)
            candidates += 1
            key = (result["constraint_met"], -result["normals_called_poor_quality"] if not result["constraint_met"] else 0,
                   round(result["objective"], 12), -round(sum(abs(s) for s in shift), 6), -abs(seconds - default_seconds))
            if best_key is None or key > best_key:
                best_key = key
                best = {**result, "evidence_seconds": float(seconds),
                        "record_logit_adjustment": {kind: float(s) for kind, s in zip(kinds, shift)}}
    chosen = {**detection, "evidence_seconds": best["evidence_seconds"],
              "record_logit_adjustment": best["record_logit_adjustment"]}

    def labels_by_detect(rule: Mapping) -> list[str]:
        return [detection_respstf.detect(p, id2label, rule, frame_seconds)["record_label"] for p in probabilities]

    check = figures(labels_by_detect(chosen))
    if not math.isclose(check["objective"], best["objective"], abs_tol=1e-9):
        raise RuntimeError(f"choose_decision: detect() gives the objective {check['objective']} for the chosen decision, "
                           f"the search {best['objective']}")
    return {"detection": chosen, **best, "candidates": candidates, "before": figures(labels_by_detect(detection))}


def pooled_probabilities(caches: Sequence[Mapping]) -> dict:
    """Several cache files' recordings as one (the folds' validation recordings: out-of-fold)."""
    first = caches[0]
    for cached in caches[1:]:
        if cached["labels"] != first["labels"] or not math.isclose(cached["frame_seconds"], first["frame_seconds"]):
            raise ValueError("the folds' detectors differ in classes or frame length; choose a decision per detector.")
    return {"probabilities": [p for c in caches for p in c["probabilities"]],
            "record_labels": [r for c in caches for r in c["record_labels"]],
            "labels": first["labels"], "frame_seconds": first["frame_seconds"]}


# -- latency ------------------------------------------------------------------------------------------------------------


def measure_latency(model_dir: str | Path, runs: int = 20, recording: Path = LATENCY_RECORDING) -> dict:
    """Median ms of ``runs`` end-to-end passes (file -> pipeline -> events and record label) over one real recording,
    after one warm-up, on the current torch threads; and the checkpoint's ``model.safetensors`` in MB."""
    detector = load_detector(model_dir)
    for _ in range(3):  # warm-up: the first calls of a process prepare the CWT and the model's kernels (seconds)
        detector(str(recording))
    load = os.getloadavg()[0]
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        detector(str(recording))
        timings.append(1e3 * (time.perf_counter() - started))
    import soundfile

    weights = Path(model_dir) / "model.safetensors"
    return {"ms": statistics.median(timings), "runs": runs, "recording_seconds": soundfile.info(str(recording)).duration,
            "mb": weights.stat().st_size / 1e6 if weights.is_file() else math.nan, "threads": torch.get_num_threads(),
            "load": load}


# -- tables -----------------------------------------------------------------------------------------------------------


def _found(name: str, level: str):
    return lambda r: (r["found"][name][level], r["found"][name]["annotated"])


ROWS = [  # (row, value of a result: a float, or (count, of) pooled over columns)
    ("Score 2-2 (derived record labels)", lambda r: r["records"]["22"]["score"]),
    ("Score 2-1 (derived record labels)", lambda r: r["records"]["21"]["score"]),
    ("normals called Poor Quality", lambda r: (r["records"]["normals_called_poor_quality"], r["records"]["normals"])),
    ("wheezes found (Wheeze)", _found("Wheeze", "exact")),
    ("wheezes found (continuous kind)", _found("Wheeze", "kind")),
    ("crackles found (exact type)", _found("crackles", "exact")),
    ("crackles found (discontinuous kind)", _found("crackles", "kind")),
    ("adventitious-vs-normal frame F1 (0.1 s, inside events)", lambda r: r["frames"]["f1"]),
    ("event F1, adventitious vs normal", lambda r: r["binary"]["event"]["f1"]),
    ("event error rate, adventitious vs normal", lambda r: r["binary"]["event"]["error_rate"]),
    ("segment F1 (1 s), adventitious vs normal", lambda r: r["binary"]["segment"]["f1"]),
    ("segment error rate, adventitious vs normal", lambda r: r["binary"]["segment"]["error_rate"]),
    ("event F1, types (overall / micro)", lambda r: r["type"]["event"]["f1"]),
    ("event F1, types (class mean / macro)", lambda r: r["type"]["event"]["macro_f1"]),
    ("event error rate, types", lambda r: r["type"]["event"]["error_rate"]),
    ("segment F1 (1 s), types (overall / micro)", lambda r: r["type"]["segment"]["f1"]),
    ("segment F1 (1 s), types (class mean / macro)", lambda r: r["type"]["segment"]["macro_f1"]),
    ("segment error rate, types", lambda r: r["type"]["segment"]["error_rate"]),
]
for _type in detection_metrics.ADVENTITIOUS_TYPES:
    ROWS += [(f"{_type}: found (exact type)", _found(_type, "exact")), (f"{_type}: found (kind)", _found(_type, "kind"))
             ] if _type != "Wheeze" else []
    ROWS += [(f"{_type}: event F1", lambda r, t=_type: r["type"]["event"]["class_wise"][t]["f1"]),
             (f"{_type}: segment F1", lambda r, t=_type: r["type"]["segment"]["class_wise"][t]["f1"])]
ROWS.append(("Normal events found (mostly predicted Normal)", _found("Normal", "exact")))


def _cell(value) -> str:
    if isinstance(value, tuple):
        count, total = value
        return f"{count}/{total} ({count / total:.0%})" if total else "–"
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _summary_cell(values: list) -> str:
    if isinstance(values[0], tuple):
        return _cell((sum(v[0] for v in values), sum(v[1] for v in values))) + " pooled"
    numbers = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not len(numbers):
        return "–"
    return training.mean_and_sd(numbers)


def results_table(columns: list[tuple[str, dict]], heading: str, notes: Sequence[str] = ()) -> str:
    """The RESULTS.md section: a row per measure, a column per evaluation, and with several columns their mean ± sd
    (the found counts pooled)."""
    names = [name for name, _ in columns]
    summary = len(columns) > 1
    lines = [f"## {heading}", ""]
    lines += [*notes, ""] if notes else []
    lines += ["| measure | " + " | ".join(names) + (" | mean ± sd |" if summary else " |"),
              "|---" * (len(names) + 1 + summary) + "|"]
    lines.append("| recordings (with annotated events) | " + " | ".join(
        f"{r['recordings']} ({r['event_recordings']})" for _, r in columns) + (" | |" if summary else " |"))
    for name, value in ROWS:
        values = []
        for _, result in columns:
            try:
                values.append(value(result))
            except (KeyError, TypeError):
                values.append(None)
        cells = [_cell(v) for v in values]
        if all(cell == "–" for cell in cells):  # e.g. a type no recording here holds
            continue
        lines.append(f"| {name} | " + " | ".join(cells)
                     + (f" | {_summary_cell([v for v in values if v is not None])} |" if summary else " |"))
    return "\n".join(lines)


def latency_table(rows: list[tuple[str, dict]]) -> str:
    lines = [f"End to end on CPU ({rows[0][1]['threads']} threads): one real {rows[0][1]['recording_seconds']:.1f} s recording, "
             f"file -> `respiratory-event-detection` pipeline -> events and record label; targets <= "
             f"{TARGETS['latency_ms']:.0f} ms, <= {TARGETS['checkpoint_mb']:.0f} MB.", "",
             "| model | median ms | runs | model.safetensors MB | machine load (1 min) before |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['ms']:.1f} | {r['runs']} | {r['mb']:.2f} | {r['load']:.1f} |" for name, r in rows]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------------------------


def _decision_argument(text: str | None) -> dict | None:
    if text is None:
        return None
    path = Path(text)
    decision = json.loads(path.read_text() if path.is_file() else text)
    return decision.get("detection", decision)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--model", action="append", required=True, help="A detector's folder (repeat for several).")
    parser.add_argument("--cv_fold", action="append", type=int, choices=range(training.CV_FOLDS), metavar="K",
                        help="The patient fold whose validation recordings the --model at the same position is scored on.")
    parser.add_argument("--split", default="inter_test", help="The split scored when no --cv_fold is given.")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--decision", default=None,
                        help="JSON (or a JSON file) with evidence_seconds / record_logit_adjustment replacing the "
                             "detectors' config.detection ones (what --choose_decision prints).")
    parser.add_argument("--choose_decision", action="store_true",
                        help="Search the record decision on the pooled recordings of the given models and folds.")
    parser.add_argument("--write_decision", default=None, metavar="DIR",
                        help="With --choose_decision: write the chosen decision into DIR/config.json (a detector to ship).")
    parser.add_argument("--latency", action="store_true", help="Measure the CPU latency and checkpoint size instead.")
    parser.add_argument("--latency_runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no_cache", action="store_true", help="Neither read nor write <model>/frame_probabilities_*.npz.")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args(argv)
    folds = args.cv_fold or []
    if args.write_decision and not args.choose_decision:
        parser.error("--write_decision writes what --choose_decision chooses: pass both")
    if folds and len(folds) != len(args.model):
        parser.error(f"give one --cv_fold per --model ({len(args.model)} models, {len(folds)} folds), or none for --split")
    torch.set_num_threads(args.threads)
    device = training.describe_device("cpu")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    date = datetime.date.today()

    if args.latency:
        rows = [(name, measure_latency(name, args.latency_runs)) for name in args.model]
        text = f"## {date} · commit {commit} · run on {device} · event detector latency\n\n" + latency_table(rows)
        _publish(text, args.results)
        return {"latency": dict(rows)}

    decision = _decision_argument(args.decision)
    splits: dict[tuple, object] = {}
    columns, caches, detections = [], [], []
    for index, name in enumerate(args.model):
        fold = folds[index] if folds else None
        key = (args.split, fold)
        if key not in splits:
            splits[key] = load_recordings(args.dataset, args.split, fold)
        rows = splits[key]
        detector = load_detector(name)
        cache = None if args.no_cache else cache_path(name, split_tag(args.split, fold))
        print(f"{name}: {len(rows)} recordings of {split_tag(args.split, fold)}", flush=True)
        cached = frame_probabilities(detector, rows, cache, checkpoint_sha256(name))
        detection = decision_of(detector.model.config, decision)
        result = score_probabilities(cached, rows, detection)
        columns.append((f"fold {fold}" if fold is not None else f"{Path(name).name} {args.split}", result))
        caches.append(cached)
        detections.append(detection)

    what = (f"validation folds {' '.join(map(str, folds))} (patient cross-validation)" if folds
            else f"eval split `{args.split}`")
    notes = [f"`python benchmarks/event_detection.py {' '.join(_quoted(a) for a in (argv if argv is not None else sys.argv[1:]))}`"
             f"; models: " + ", ".join(f"{column} = `{name}`" for (column, _), name in zip(columns, args.model))
             + f"; frames of {columns[0][1]['frame_seconds']:.3f} s; decision: evidence_seconds "
             + ", ".join(sorted({str(d.get('evidence_seconds')) for d in detections})) + ", record_logit_adjustment "
             + ", ".join(sorted({json.dumps(d.get('record_logit_adjustment'), sort_keys=True) for d in detections}))
             + ". Event measures leave out the Poor Quality recordings (no annotated events); targets: wheezes and "
             "crackles found >= 90 %, frame F1 >= 0.80."]
    text = results_table(columns, f"{date} · commit {commit} · run on {device} · event detection · {what}", notes)
    output = {"columns": dict(columns)}
    if args.choose_decision:
        pooled = pooled_probabilities(caches)
        choice = choose_decision(pooled["probabilities"], pooled["record_labels"], dict(enumerate(pooled["labels"])),
                                 detections[0], pooled["frame_seconds"])
        output["decision"] = choice
        text += "\n\n" + decision_text(choice, len(pooled["probabilities"]))
        if args.write_decision:
            where = (f"cross-validation folds {', '.join(map(str, folds))}, each scored by the fold's detector that did not "
                     "train on it" if folds else f"split `{args.split}`")
            write_decision(args.write_decision, choice, f"the {len(pooled['probabilities'])} recordings of {where}")
            text += f"\n\nWritten into `{args.write_decision}/config.json` (`--write_decision`)."
    _publish(text, args.results)
    return output


def write_decision(model_dir: str | Path, choice: Mapping, chosen_on: str | None = None) -> None:
    """Set ``model_dir``'s ``config.detection`` decision (``evidence_seconds``, ``record_logit_adjustment``) to
    ``choice``'s, the rest of its config as it is. A trained run's folder (with ``results.json``) also keeps where the
    decision was chosen (``chosen_on``) and what it scored there, and its model card says so."""
    config = RespSTFConfig.from_pretrained(model_dir)
    config.detection = {**config.detection, **{key: choice[key] for key in ("evidence_seconds", "record_logit_adjustment")}}
    config._validate()
    config.save_pretrained(model_dir)
    results = Path(model_dir) / "results.json"
    if chosen_on and results.is_file():
        summary = json.loads(results.read_text())
        summary["decision"] = {"chosen_on": chosen_on, **{key: choice[key] for key in (
            "score_22", "score_21", "normals_called_poor_quality", "normals")}}
        training.write_results(Path(model_dir), summary)
        training.write_model_card(Path(model_dir), summary)


def decision_text(choice: Mapping, recordings: int) -> str:
    before, pct = choice["before"], lambda c: c["normals_called_poor_quality"] / max(c["normals"], 1)
    return (f"Record decision chosen on these {recordings} recordings (`--choose_decision`: the best mean of the 2-1 and "
            f"2-2 Scores with at most {MAX_NORMALS_POOR_QUALITY:.0%} of normals called Poor Quality; "
            f"{choice['candidates']} settings): evidence_seconds {choice['evidence_seconds']:g}, record_logit_adjustment "
            f"`{json.dumps(choice['record_logit_adjustment'])}`: Score 2-2 {choice['score_22']:.3f}, 2-1 "
            f"{choice['score_21']:.3f}, normals called Poor Quality {choice['normals_called_poor_quality']}/"
            f"{choice['normals']} ({pct(choice):.1%}){'' if choice['constraint_met'] else ' (over the limit: none met it)'}; "
            f"with the detectors' own decision: {before['score_22']:.3f}, {before['score_21']:.3f}, "
            f"{before['normals_called_poor_quality']}/{before['normals']} ({pct(before):.1%}).\n\n"
            f"`--decision '{json.dumps({k: choice[k] for k in ('evidence_seconds', 'record_logit_adjustment')})}'`")


def _quoted(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}\"'") else arg


def _publish(text: str, results: str) -> None:
    print(text)
    with open(results, "a") as handle:
        handle.write("\n" + text + "\n")
    print(f"\nappended to {results}")


if __name__ == "__main__":
    main()
