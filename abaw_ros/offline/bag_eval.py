"""Run the node's perception pipeline over every frame of a bag (``abaw-affect bag-eval``).

Frames are read in recording order and each one goes through
:class:`~abaw_ros.perception.pipeline.PerceptionPipeline` — the object the node runs —
one after the other: nothing is dropped and the result does not depend on timing. One
``FaceAffectArray`` per processed frame goes to a new bag (same stamps and frame_id as the
image, written at the image's log time). With labels, the official metrics go to a JSON
report; a timeline plot is drawn either way.

Broken frames (bad CDR, short pixel buffer, undecodable JPEG) and frames in an encoding
that cannot be decoded (e.g. one ``16UC1`` depth frame) are skipped, counted and listed,
as the node does; with ``strict`` the first undecodable encoding stops the run and what
was processed before it is kept. If the storage fails part way, reading goes on past the
damage where the format allows (the next MCAP chunk, the next sqlite row) and the frames
that could not be read are counted (``frames_unread``, ``damage``). An MCAP recording that
was cut short (no footer) is an error unless ``recover`` is set; then its complete records
are processed. A missing topic or an unreadable bag stops the run with an error naming it.

Nothing that this run did not create is deleted or replaced: the output bag, the report
and the plot are checked before anything is read (:mod:`abaw_ros.offline.outputs`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abaw_ros.config import PipelineConfig
from abaw_ros.offline.annotations import FrameLabels, coverage_warnings
from abaw_ros.offline.bag_types import (
    DEFAULT_AFFECT_TOPIC,
    DEFAULT_BAG_VERSION,
    DEFAULT_IMAGE_TOPIC,
    STORAGES,
    BagError,
)
from abaw_ros.offline.bag_writers import AffectBagWriter
from abaw_ros.offline.frame_loop import MAX_LISTED_SKIPS, FrameCounts, run_frames
from abaw_ros.offline.outputs import (
    AFFECT_BAG,
    REPORT_FORMAT,
    OutputError,
    check_bag_output,
    check_file_output,
    is_our_report,
)
from abaw_ros.offline.plots import DEFAULT_SIZE_PX, plot_timeline
from abaw_ros.offline.report import MISSING_POLICIES, compute_metrics, write_report
from abaw_ros.offline.sources import BagSource, source_inputs
from abaw_ros.offline.track import FACE_LARGEST, PredictionTrack
from abaw_ros.perception.face_values import face_affect_values

if TYPE_CHECKING:
    from abaw_ros.offline.sources import SourceFrame
    from abaw_ros.perception.pipeline import FrameResult, PerceptionPipeline

log = logging.getLogger(__name__)

# Exit status of a run: bag-eval's for one bag, each bag's status in a batch.
EXIT_DONE = 0
EXIT_ERROR = 2  # the bag, topic, parameters, labels or an output cannot be used; --strict stopped
EXIT_SKIPPED = 3  # --strict, and frames were skipped
EXIT_DAMAGED = 4  # the storage is damaged: the frames that could be read were processed


@dataclass
class BagEvalOptions:
    """What to read, where to write, how to score. Paths left None get defaults next to
    the output bag: ``<output>_report.json`` and ``<output>_timeline.png``."""

    bag: Path
    output: Path | None = None  # default: <bag>_affect next to the input
    topic: str | None = DEFAULT_IMAGE_TOPIC  # None: the bag's only image topic
    output_topic: str = DEFAULT_AFFECT_TOPIC
    storage: str | None = None  # mcap | sqlite3; None: as the input
    bag_version: int = DEFAULT_BAG_VERSION  # rosbag2 metadata version of the affect bag (8 or 9)
    overwrite: bool = False  # replace an earlier affect bag / report / plot (never anything else)
    recover: bool = False  # read a cut-short MCAP recording up to the damage
    strict: bool = False  # stop at the first frame in an encoding that cannot be decoded
    labels: FrameLabels | None = None
    report: Path | None = None
    plot: Path | None = None
    write_plot: bool = True
    plot_size_px: tuple[int, int] = DEFAULT_SIZE_PX
    face: str = FACE_LARGEST
    missing: str = "exclude"
    stamp_tolerance_ns: int = 1_000_000
    max_frames: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.bag = Path(self.bag)
        if self.output is None:
            self.output = self.bag.with_name(self.bag.name.removesuffix(self.bag.suffix) + "_affect")
        self.output = Path(self.output)
        if self.report is None:
            self.report = self.output.with_name(self.output.name + "_report.json")
        if self.plot is None:
            self.plot = self.output.with_name(self.output.name + "_timeline.png")
        if self.storage is not None and self.storage not in STORAGES:
            raise ValueError(f"storage={self.storage!r}: choose from {list(STORAGES)}")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"missing={self.missing!r}: choose from {list(MISSING_POLICIES)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames={self.max_frames}: must be >= 1")
        if self.output.resolve() == self.bag.resolve():
            raise ValueError(f"output={str(self.output)!r} is the input bag")


@dataclass
class BagEvalResult(FrameCounts):
    """What a run did (the frame loop's counts, and the bag's); ``to_dict()`` is the
    ``run`` section of the JSON report."""

    bag: Path
    output: Path
    topic: str
    msgtype: str
    storage: str
    frames_in_bag: int
    frames_unread: int = 0  # lost to storage damage, or after it
    damage: str | None = None
    recovered: bool = False  # read with MCAP recovery (the file could not be opened normally)
    metrics: dict[str, Any] = field(default_factory=dict)
    label_warnings: list[str] = field(default_factory=list)  # labels and bag do not fit
    report: Path | None = None
    plot: Path | None = None
    track: PredictionTrack | None = None

    @property
    def frames_skipped(self) -> int:
        return self.frames_skipped_broken + self.frames_skipped_unsupported + self.frames_unread

    def status(self, strict: bool = False) -> tuple[str, int]:
        """How the run ended and its exit status: ``("stopped", 2)`` when ``--strict``
        stopped at an undecodable frame, ``("damaged", 4)`` when frames were lost to
        storage damage (not read with ``--recover``), ``("skipped", 3)`` when ``strict``
        and frames were skipped, else ``("done", 0)``."""
        if self.stopped:
            return "stopped", EXIT_ERROR
        if self.damage and not self.recovered:
            return "damaged", EXIT_DAMAGED
        if self.frames_skipped and strict:
            return "skipped", EXIT_SKIPPED
        return "done", EXIT_DONE

    def problem(self, status: str, named: bool = False) -> str | None:
        """The one line for a run that did not end as done (``status`` from :meth:`status`),
        or None: the batch summary's ``problem``; ``named``: the single run's error line,
        which names the bag and where the frames before a ``--strict`` stop went."""
        if status == "stopped":
            line = f"stopped at the first undecodable frame (--strict): {self.stopped}"
            return line + (f"; the {self.frames_processed} frames before it are in {self.output}" if named else "")
        if status == "damaged":
            return (f"bag {f'{self.bag} ' if named else ''}is damaged: {self.frames_unread} of {self.frames_in_bag} "
                    f"frames could not be read ({self.damage}); the {self.frames_read} frames read are in "
                    f"{self.output}")
        if status == "skipped":
            return f"{self.frames_skipped} frames skipped (--strict; listed in {self.report})"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_bag": str(self.bag),
            "input_topic": self.topic,
            "input_type": self.msgtype,
            "output_bag": str(self.output),
            "output_storage": self.storage,
            "frames_in_bag": self.frames_in_bag,
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_skipped": self.frames_skipped,
            "frames_skipped_broken": self.frames_skipped_broken,
            "frames_skipped_unsupported": self.frames_skipped_unsupported,
            "frames_unread_after_damage": self.frames_unread,
            "damage": self.damage,
            "stopped": self.stopped,
            "recovered": self.recovered,
            "stopped_at_max_frames": self.stopped_at_max_frames,
            "skipped": [{"index": s.index, "stamp_ns": s.stamp_ns, "reason": s.reason}
                        for s in self.skipped[:MAX_LISTED_SKIPS]],
            "frames_with_face": self.frames_with_face,
            "faces_total": self.faces_total,
            "elapsed_s": round(self.elapsed_s, 4),
            "pipeline_s": round(self.pipeline_s, 4),
            "frames_per_second": round(self.frames_per_second, 3),
            "pipeline_frames_per_second": round(self.pipeline_frames_per_second, 3),
        }

    def summary(self) -> str:
        lines = [
            f"{self.frames_processed} of {self.frames_in_bag} frames of {self.topic} processed in "
            f"{self.elapsed_s:.1f} s: {self.frames_per_second:.2f} frames/s "
            f"(pipeline alone {self.pipeline_frames_per_second:.2f} frames/s)",
            f"faces in {self.frames_with_face} frames; affect bag: {self.output} ({self.storage})",
        ]
        if self.frames_skipped:
            lines.append(f"skipped {self.frames_skipped} frames: {self.frames_skipped_broken} broken, "
                         f"{self.frames_skipped_unsupported} in an encoding that cannot be decoded, "
                         f"{self.frames_unread} unread (storage damage)")
        if self.damage:
            lines.append(f"bag damaged: {self.damage}")
        if self.stopped:
            lines.append(f"stopped early (--strict): {self.stopped}")
        lines += [f"warning: {w}" for w in self.label_warnings]
        for task, entry in self.metrics.items():
            if "scores" in entry:
                name = entry["primary"]
                lines.append(f"{task}: {name} = {entry['scores'][name]:.4f} over {entry['frames_scored']} "
                             f"frames (coverage {entry['coverage']:.0%})")
            else:
                lines.append(f"{task}: {entry.get('error')}")
        if self.report:
            lines.append(f"report: {self.report}")
        if self.plot:
            lines.append(f"plot: {self.plot}")
        return "\n".join(lines)




def _input_paths(options: BagEvalOptions) -> list[Path]:
    """What this run reads, so that no output lands on it: the bag, its folder when the
    bag is a storage file inside a bag folder, and the label files."""
    paths = source_inputs(options.bag)
    if options.labels is not None:
        paths += [Path(source.split("#", 1)[0]) for source in options.labels.sources.values()]
    return paths


def check_outputs(options: BagEvalOptions) -> None:
    """Refuse (:class:`~abaw_ros.offline.outputs.OutputError`) before anything is read when
    an output would replace something this tool did not write, or an input."""
    inputs = _input_paths(options)
    named = {"affect bag": options.output, "report": options.report,
             "plot": options.plot if options.write_plot else None}
    seen: dict[Path, str] = {}
    for what, path in named.items():
        if path is None:
            continue
        if Path(path).resolve() in seen:
            raise OutputError(f"the {seen[Path(path).resolve()]} and the {what} would both be written to "
                              f"{str(path)!r}: give them different paths")
        seen[Path(path).resolve()] = what
    check_bag_output(options.output, AFFECT_BAG, options.overwrite, inputs)
    if options.report is not None:
        check_file_output(options.report, "report", options.overwrite, is_our_report(options.report),
                          inputs, [options.output])
    if options.write_plot and options.plot is not None:
        check_file_output(options.plot, "plot", options.overwrite, False, inputs, [options.output])


def evaluate_bag(
    options: BagEvalOptions,
    config: PipelineConfig | None = None,
    pipeline: PerceptionPipeline | None = None,
) -> BagEvalResult:
    """Process every frame of ``options.bag`` with ``pipeline`` (built from ``config`` when
    not given), write the affect bag, the report and the plot; return what happened."""
    check_outputs(options)
    limit = (config or getattr(pipeline, "config", None) or PipelineConfig()).max_image_pixels
    source = BagSource(options.bag, options.topic, options.recover, max_pixels=limit)
    with source:  # a bad bag or topic fails here, before any model is loaded
        bag = source.reader
        if pipeline is None:
            from abaw_ros.perception.pipeline import PerceptionPipeline

            pipeline = PerceptionPipeline((config or PipelineConfig()).validate())
        storage = options.storage or bag.storage
        result = BagEvalResult(options.bag, options.output, bag.topic, bag.msgtype, storage, bag.message_count)
        track = PredictionTrack(options.face)
        start = time.perf_counter()
        sink = AffectBagWriter(options.output, options.output_topic, storage, options.overwrite,
                               _input_paths(options), weights_trained=bool(pipeline.metadata.trained),
                               model_id=pipeline.backend.identity.model_id, version=options.bag_version)

        def to_track(frame: SourceFrame, frame_result: FrameResult) -> None:
            track.add(frame.index, frame.stamp_ns, [face_affect_values(f, frame.image.shape)
                                                    for f in frame_result.faces])

        try:
            run_frames(source, pipeline, [lambda frame, frame_result: sink.write(frame_result, frame), to_track],
                       result, strict=options.strict, max_frames=options.max_frames, progress=options.progress,
                       total=bag.message_count, desc=bag.topic)
        except OutputError:
            sink.discard()  # the bag itself could not be written (disk full, read-only): nothing to keep
            raise
        except BaseException:
            try:
                sink.close(complete=False)  # keeps what was written; an empty bag is dropped
            except Exception as exc:  # the writer itself failed (disk full): nothing readable to keep
                log.error("the affect bag could not be finished: %s", exc)
                sink.discard()
            raise
        result.damage = bag.damage
        result.recovered = bag.recovered
        result.frames_unread = bag.frames_unread
        if result.frames_processed == 0:
            sink.discard()  # created by this run and empty
        else:
            # Damage in the input is not ours: every readable frame was processed.
            result.output = sink.close(complete=result.stopped is None)
        result.elapsed_s = time.perf_counter() - start
    result.track = track
    if result.frames_processed == 0:
        raise BagError(f"no frame of {result.topic!r} in bag {str(options.bag)!r} could be processed "
                       f"({result.frames_skipped} skipped" + result.no_frame_detail()
                       + (f"; stopped: {result.stopped}" if result.stopped else "")
                       + (f"; damage: {result.damage}" if result.damage else "") + ")")

    # A tracker id that never occurs: say which ids did (the affect bag stays: it is complete).
    track.require_face(f"bag {str(options.bag)!r} (affect bag written to {str(options.output)!r})")
    aligned = None
    if options.labels is not None:
        aligned = options.labels.align(track.index_array, track.stamp_array, options.stamp_tolerance_ns)
        result.label_warnings = coverage_warnings(options.labels, aligned, result.frames_in_bag)
        for line in result.label_warnings:
            log.warning("%s", line)
        result.metrics = compute_metrics(track, aligned, options.missing)
    model = pipeline.model_summary()
    if options.write_plot and options.plot is not None:
        title = f"{options.bag.name} {result.topic}"
        if model.get("trained") is False:
            title += " - UNTRAINED model: affect values are placeholders"
        result.plot = plot_timeline(track, options.plot, aligned, title=title, size_px=options.plot_size_px,
                                    ah_threshold=model.get("ah_threshold", 0.5), metrics=result.metrics)
    if options.report is not None:
        report = {
            "format": REPORT_FORMAT,
            "run": result.to_dict(),
            "face": options.face,
            "missing": options.missing,
            "labels": dict(aligned.sources) if aligned is not None else {},
            "label_warnings": result.label_warnings,
            "metrics": result.metrics,
            "plot": str(result.plot) if result.plot else None,
            "model": model,
        }
        if config is not None:
            report["pipeline_config"] = config.to_dict()
        result.report = write_report(options.report, report)
    return result
