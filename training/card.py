"""What a run leaves: results.json, the model card, and the Hub upload."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from huggingface_hub import EvalResult, ModelCardData, create_branch, create_repo, get_token, upload_folder
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from respstf.feature_extraction import RespSTFFeatureExtractor
from respstf.hub_dataset import DETECTION_TASK, TASKS
from respstf.modeling import DETECTION_PIPELINE_TASK, RespSTFConfig

from .model_setup import DETECTION_DECISION

logger = logging.getLogger("respstf.training")

# What the extractor does with an input shorter than its clip, as a model card says it.
SHORTER_INPUT = {"repeat": "a shorter input is repeated to fill it", "zero": "a shorter input is zero-padded (and masked)"}


def describe_selection(training_args, from_checkpoint: str | None) -> str | None:
    """Which weights a run keeps, as its card says: the best on validation, None for the last step's, or for a run
    that only scores (``--do_train false``) the choice made when ``from_checkpoint`` was trained."""
    if not training_args.do_train:
        return f"made when `{from_checkpoint}` was trained"
    if not training_args.load_best_model_at_end:
        return None
    return "best epoch" if training_args.eval_strategy == "epoch" else "best evaluation"


def write_results(output_dir: Path, summary: dict) -> None:
    """``output_dir/results.json``: a run's summary (how it was trained, its measured scores)."""
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2, default=float))


def write_model_card(output_dir: Path, summary: dict, repo_id: str | None = None) -> None:
    """``output_dir/README.md`` from a run's summary (task, labels, dataset, parent, measured scores); the usage
    snippet loads ``repo_id`` when the folder is pushed to the Hub under that id."""
    task, label_names, results = summary["task"], summary["labels"], summary["results"]
    config = RespSTFConfig.from_pretrained(output_dir)
    detection = config.detection
    if task == DETECTION_TASK:
        task_text = "SPRSound event detection in whole recordings"
    else:
        task_text = f"SPRSound Task {task[0]}-{task[1]} ({TASKS[task]['level']} level)" if task else "a custom respiratory-sound dataset"
    rows = "\n".join(
        f"| {split} | {r['score']:.3f} | {r['se']:.3f} | {r['sp']:.3f} | {r['as']:.3f} | {r['hs']:.3f} | {r['rows']} |"
        for split, r in results.items()
    )
    # A local parent is named by its folder (an absolute path says nothing on the Hub, nor on another
    # machine: the run may have been trained elsewhere); a Hub id as given.
    parent = summary["from"]
    if parent and (Path(parent).is_dir() or Path(parent).is_absolute()):
        parent = Path(parent).resolve().name
    seeds = summary.get("seed_selection")  # set by benchmarks/sprsound_score.py --seeds
    selection = summary.get("selection", "best epoch")  # a results.json from before "selection" was kept: best epoch
    if selection or seeds:
        chosen = selection or "last training step"
        if seeds:
            listed = ", ".join(map(str, seeds["validation_score_by_seed"]))
            chosen += (f" of each of seeds {listed}, then the mean of their weights (a uniform soup), above each seed on validation"
                       if seeds["kept"] == "soup" else f"; seed {seeds['kept']} of seeds {listed}")
        validation_text = f"Selection ({chosen}) used only the patient-disjoint validation split carved from `train`."
    elif "validation" in results:
        validation_text = ("These are the weights of the last training step (none was chosen on validation); validation is "
                           "a patient-disjoint split carved from `train`.")
    else:
        validation_text = ("These are the weights of the last training step of a run on all of `train` (no validation "
                           f"split): {'its recipe, epochs and record decision' if detection else 'its recipe and epochs'} "
                           "were chosen beforehand, on other runs' held-out patients (e.g. cross-validation, "
                           "`train.py --cv_fold`).")
    if "cv_ensemble" in summary:  # set by benchmarks/sprsound_score.py --cv_folds ... --copy_to
        validation_text = cv_ensemble_text(summary["cv_ensemble"], label_names)
    normal_text = f" The Score's specificity (SP) is the recall of `{summary['normal_label']}`." if not task and "normal_label" in summary else ""
    extractor = RespSTFFeatureExtractor.from_pretrained(output_dir)
    sprsound_splits = """
`inter_test` is the SPRSound 2022 inter-patient test set (patients never seen in training); the
paper's BioCAS 2023 test set was not available, so these numbers are not directly comparable to its
0.810 / 0.667 / 0.744 / 0.608."""
    dataset_name = Path(summary["dataset"]).name
    # model-index: the Hub shows each split's Score on the model page.
    pipeline_name = DETECTION_PIPELINE_TASK if detection else "audio-classification"
    metadata = ModelCardData(
        library_name="transformers", pipeline_tag=None if detection else pipeline_name, license="apache-2.0",
        tags=[pipeline_name, *(["sound-event-detection"] if detection else []), "respiratory-sound", "stethoscope",
              *(["sprsound"] if task else []), "cwt", "respstf"],
        metrics=["sprsound_score"], model_name=repo_id or output_dir.name,
        eval_results=[
            EvalResult(task_type="audio-classification", dataset_type=dataset_name, dataset_name=dataset_name, dataset_split=split,
                       metric_type="sprsound_score", metric_name="Score", metric_value=round(r["score"], 4))
            for split, r in results.items()
        ] or None,
    )
    input_text = f"""The feature extractor resamples any rate to 8 kHz and fits each input to {extractor.n_frames} frames
({extractor.clip_seconds:.2f} s), as in training: {SHORTER_INPUT[extractor.padding_mode]}, a longer one is centre-cropped,
with a warning (call the feature extractor with `truncation=False` to keep it whole). With `respstf` installed and
imported (`import respstf.modeling, respstf.feature_extraction`) the Auto classes need no `trust_remote_code`;
`pipeline` does, as the folder ships its own (a file read at its own rate, a warning when it is cut short), or pass
`pipeline_class=respstf.modeling.RespSTFAudioClassificationPipeline`."""
    card = f"""---
{metadata.to_yaml()}
---

# RespSTF — {task_text}

A RespSTF model (CWT scalogram + Inception-residual CNN with spatio-temporal focusing and multi-head
attention; after Ngo et al., IEEE BioCAS 2023, arXiv 2306.14929) trained with `train.py` of the
`respstf` package on `{dataset_name}`{f' starting from `{parent}`' if parent else ''}.

{detection_classes(config, "validation" in results, summary.get("decision")) if detection else f"Classes (`id2label`): {', '.join(f'{i} = {name}' for i, name in enumerate(label_names))}."}{normal_text}

## Measured scores (official SPRSound Score{' of the record classes its frames give' if detection else ''})

{validation_text}{sprsound_splits if task else ''}

| split | Score | SE | SP | AS | HS | rows |
|---|---|---|---|---|---|---|
{rows}

## Use

```python
from transformers import pipeline
{'detect' if detection else 'classify'} = pipeline("{pipeline_name}", model="{repo_id or '<this folder or repo id>'}", trust_remote_code=True)
{'detect' if detection else 'classify'}({{"raw": waveform, "sampling_rate": 8000}})  # or a file path (read at its own rate)
```

It needs `torch`, `scipy` and `transformers` 4.54 or later (with 4.50-4.53, also pass `pipeline` the same folder
or repo as `feature_extractor=`), and `soundfile` to read files (FFmpeg for other formats; without `soundfile`, FFmpeg
at 8 kHz, which cannot tell a file cut short).

{DETECTION_USE if detection else input_text}
"""
    (output_dir / "README.md").write_text(card)


DETECTION_USE = """The pipeline reads the whole recording (any rate, resampled to 8 kHz; any length, long ones in overlapping
chunks) and returns `{"events": [{"label", "start", "end", "score"}, ...], "record_label", "record_scores"}`, times in
seconds."""


def mean_and_sd(values) -> str:
    """``"0.759 ± 0.011"``: the mean of fold Scores (or any figures) and their sample standard deviation (0 for one)."""
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def cv_ensemble_text(ensemble: dict, label_names: list[str]) -> str:
    """A fold ensemble's card paragraph: its members, the CV Scores and the decision chosen on them."""
    chosen, before = ensemble["chosen"], ensemble["before"]
    offsets = ", ".join(f"{name} {value:+.2f}" for name, value in zip(label_names, ensemble["offsets"]) if value)
    poor = (f" Normal recordings called Poor Quality over the folds: {before['normals_called_poor_quality']} of "
            f"{before['normals']} without it, {chosen['normals_called_poor_quality']} with it."
            if "Poor Quality" in label_names else "")
    prevalence = (f", Poor Quality weighted to {ensemble['poor_quality_prevalence']:.0%} of recordings (the prevalence the "
                  "decision is made for)," if "Poor Quality" in label_names else "")
    decision = (f"`config.logit_adjustment` adds {offsets} to the log-probabilities (0 for the other classes): the decision "
                f"with the best mean Score over the folds' out-of-fold predictions{prevalence} that calls at most "
                f"{ensemble['max_normals_poor_quality']:.1%} of their normal recordings Poor Quality. Set it to `None` for the "
                "models' own prior, or to other offsets for another deployment prevalence (`respstf.modeling.prior_shift`)."
                if offsets else "No logit adjustment: none raised the folds' mean Score within the Poor Quality limit.")
    return (f"A fold ensemble: the {len(ensemble['folds'])} models of a patient-grouped cross-validation over `train` (folds "
            f"{', '.join(map(str, ensemble['folds']))} of `hub_dataset/sprsound_folds.json`), each trained without one fold's "
            "patients and its epoch chosen on them; it averages their probabilities. Cross-validation Score (each model on "
            f"its own fold's patients): {mean_and_sd(before['scores'])} (folds {', '.join(f'{v:.3f}' for v in before['scores'])}), "
            f"{mean_and_sd(chosen['scores'])} with the decision below.{poor} {decision} The ensemble itself has no held-out validation: "
            "every patient of `train` trained some member. The split below was scored once, after these choices.")


def detection_classes(config: RespSTFConfig, validated: bool = True, chosen_on: dict | None = None) -> str:
    """A detector card's paragraph on its frame classes and the record decision (the prior it assumes, how to change
    it, and where it was chosen: ``chosen_on``, as `benchmarks/event_detection.py --write_decision` records it, else
    the validation split, or for a run without one (``validated`` False) beforehand)."""
    detection = config.detection
    frames = ", ".join(f"{i} = {config.id2label[i]}" for i in range(config.num_labels))
    offsets = ", ".join(f"{kind} {value:+.2f}" for kind, value in detection["record_logit_adjustment"].items())
    decision = {key: detection[key] for key in DETECTION_DECISION}
    if chosen_on:
        where = (f"on {chosen_on['chosen_on']} (`benchmarks/event_detection.py --choose_decision`), where it gives Scores "
                 f"2-2 {chosen_on['score_22']:.3f} and 2-1 {chosen_on['score_21']:.3f} and calls "
                 f"{chosen_on['normals_called_poor_quality']} of {chosen_on['normals']} normal recordings Poor Quality.")
    elif validated:
        where = ("on the validation split below (`benchmarks/event_detection.py --choose_decision`), so its validation "
                 "Score is in-sample for them.")
    else:
        where = ("on other detectors' held-out recordings (`benchmarks/event_detection.py --choose_decision`, e.g. over "
                 "cross-validation folds).")
    chosen = "" if decision == DETECTION_DECISION and not chosen_on else f" They and the evidence length were chosen {where}"
    return (f"Frame classes (`id2label`): {frames}. The record class (`{'`, `'.join(detection['record_labels'])}`) comes from "
            f"the frames: CAS where some {detection['evidence_seconds']:g} s stretch holds a continuous sound "
            f"({', '.join(detection['continuous'])}), DAS likewise for discontinuous ones ({', '.join(detection['discontinuous'])}), "
            f"Poor Quality from the mean {detection['poor_quality']} probability over the whole recording. The decision's "
            f"log-odds offsets (the prior it assumes; 0 = the training prior): {offsets}; change them in "
            "`model.config.detection[\"record_logit_adjustment\"]` (and `save_pretrained`)." + chosen)


def hub_repo_name(training_args) -> str:
    """The repo ``--push_to_hub`` creates (``--hub_model_id``, else the output folder's name), checked before training
    so that a bad id or a machine that cannot push fails now rather than after the run; no network is used here."""
    name = training_args.hub_model_id or Path(os.path.abspath(training_args.output_dir)).name  # a link's own name
    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise ValueError(f"--push_to_hub: {name!r} is not a Hub repo id ({err}); pass --hub_model_id org/name.") from None
    if hub_constants.HF_HUB_OFFLINE:
        raise ValueError("--push_to_hub needs the network, but HF_HUB_OFFLINE is set: unset it, or push the output "
                         "folder later (e.g. `hf upload`).")
    if not (training_args.hub_token or get_token()):
        raise ValueError("--push_to_hub needs a Hub token: log in (`hf auth login`) or pass --hub_token.")
    if training_args.hub_strategy != "every_save" or training_args.hub_always_push:
        logger.warning("--hub_strategy / --hub_always_push are ignored: train.py pushes the output folder once, at the end.")
    return name


def push_folder(output_dir: Path, summary: dict, repo_name: str, card_repo_id: str | None, training_args) -> None:
    """Upload ``output_dir`` (no Trainer ``checkpoint-*`` folders) to the Hub repo ``repo_name``, created if needed."""
    # The id the Hub gives back has the namespace a bare --hub_model_id lacks: the card's snippet loads it.
    repo_id = create_repo(repo_name, exist_ok=True, private=training_args.hub_private_repo, token=training_args.hub_token).repo_id
    if repo_id != card_repo_id:
        write_model_card(output_dir, summary, repo_id)
    if training_args.hub_revision:
        create_branch(repo_id, branch=training_args.hub_revision, exist_ok=True, token=training_args.hub_token)
    # predictions_*.npz: every row's answer on the run's splits, for choices made locally, not for the model page.
    upload_folder(repo_id=repo_id, folder_path=str(output_dir), ignore_patterns=["checkpoint-*", "runs/*", "predictions_*.npz"],
                  token=training_args.hub_token, revision=training_args.hub_revision,
                  commit_message=f"respstf train.py on {Path(summary['dataset']).name}")
    logger.info("pushed to %s%s", repo_id, f" (branch {training_args.hub_revision})" if training_args.hub_revision else "")
