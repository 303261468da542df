"""SPRSound and other respiratory-sound datasets as `datasets` objects, their card, and Hub publishing.

Training, evaluation and the demo read data only through this package:

* `load_sprsound` — an SPRSound release folder -> `DatasetDict` at the record or event level;
  `example_recordings` — a few recordings of a folder such as the release's examples, with their annotations;
* `patient_disjoint_split` — a validation split with no patient on both sides; `patient_folds` — whole-patient
  cross-validation folds (`sprsound_folds`: SPRSound's, fixed and shipped with the package);
* `load_dataset_dict` (`DatasetSource`) — any supported source (SPRSound, ICBHI, a folder, ``save_to_disk``,
  a Hub id) as a `DatasetDict`;
* `load_audio_folder`, `load_icbhi` (`is_icbhi_release`) — new datasets for fine-tuning, in the same row schema;
  `load_event_folder` — a folder's annotated events, one row per recording (an event detector's rows);
* `read_audio` — soundfile decoding (no FFmpeg needed) of files, bytes or undecoded rows; `wav_shortfall`
  — whether a WAV file holds less audio than its header announces (soundfile reads such a file silently);
  `read_recording` — one recording a user gives, in any format FFmpeg decodes, with warnings when it is cut
  short or damaged;
* `build_dataset_card`, `push_to_hub`, `save_hub_folder` — the card and publishing;
* `SPRSOUND_SCORE_PATH` — the official Score metric's folder, for `evaluate.load`;
* the label maps of the four SPRSound tasks (`TASKS`, `id2label`, …) and of event detection (`DETECTION_LABELS`,
  `detection_rule`) and what each class means
  (`LABEL_DESCRIPTIONS`), defined in `labels`.
"""

from respstf.modeling.audio_file_respstf import READABLE_FORMATS, wav_shortfall

from .audio import AUDIO_EXTENSIONS, read_audio, read_recording
from .builder import DataQualityWarning, LoadingSummary, count_labels
from .card import build_dataset_card
from .folder import load_audio_folder, load_event_folder
from .hub import push_to_hub, save_hub_folder
from .icbhi import LABEL_COLUMNS as ICBHI_LABEL_COLUMNS
from .icbhi import is_icbhi_release, load_icbhi
from .labels import (
    CONTINUOUS_EVENTS,
    DETECTION_LABELS,
    DETECTION_TASK,
    DISCONTINUOUS_EVENTS,
    EVENT_TYPE_ALIASES,
    EVENT_TYPES,
    ICBHI_CYCLE_LABELS,
    ICBHI_DIAGNOSES,
    LABEL_DESCRIPTIONS,
    NORMAL_LABEL,
    POOR_QUALITY_LABEL,
    RECORD_LABELS,
    TASKS,
    event_task_label,
    icbhi_cycle_label,
    id2label,
    label2id,
    normalize_task,
    detection_rule,
    record_label_from_events,
    record_task_label,
    task_labels,
    task_spec,
    task_of_labels,
)
from .detection_metrics import (
    annotated_events, detected_events, evaluate_detection, frame_measures, record_label_scores, sed_metrics,
)
from .sources import DatasetSource, load_dataset_dict
from .splits import patient_disjoint_split, patient_folds
from .sprsound_score import SPRSOUND_SCORE_PATH
from .sprsound import (
    example_key, example_recordings, load_sprsound, load_sprsound_levels, parse_annotation, parse_file_name, sprsound_folds,
)

__all__ = [
    "AUDIO_EXTENSIONS", "CONTINUOUS_EVENTS", "DETECTION_LABELS", "DETECTION_TASK", "DISCONTINUOUS_EVENTS", "DataQualityWarning", "DatasetSource", "EVENT_TYPES",
    "EVENT_TYPE_ALIASES", "ICBHI_CYCLE_LABELS", "ICBHI_DIAGNOSES", "ICBHI_LABEL_COLUMNS", "LABEL_DESCRIPTIONS", "LoadingSummary", "NORMAL_LABEL", "POOR_QUALITY_LABEL",
    "RECORD_LABELS", "SPRSOUND_SCORE_PATH", "TASKS", "build_dataset_card", "count_labels", "detection_rule", "event_task_label", "example_key", "example_recordings", "icbhi_cycle_label",
    "id2label", "is_icbhi_release", "label2id", "load_audio_folder", "load_dataset_dict", "load_event_folder", "load_icbhi", "load_sprsound", "load_sprsound_levels",
    "normalize_task", "parse_annotation", "parse_file_name", "patient_disjoint_split", "patient_folds", "push_to_hub",
    "READABLE_FORMATS", "read_audio", "read_recording", "record_label_from_events", "record_task_label", "save_hub_folder", "sprsound_folds", "task_labels",
    "task_of_labels", "task_spec", "wav_shortfall",
    "annotated_events", "detected_events", "evaluate_detection", "frame_measures", "record_label_scores", "sed_metrics",
]
