"""Writing bags: camera frames (:class:`ImageBagWriter`, for test input and video-to-bag)
and ``FaceAffectArray`` results (:class:`AffectBagWriter`). Every bag embeds the full
message definitions, is staged beside its name and moved there when complete
(:mod:`abaw_ros.offline.outputs`)."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from abaw_ros.offline.bag_types import (
    BAG_VERSIONS,
    COMPRESSED_IMAGE,
    DEFAULT_AFFECT_TOPIC,
    DEFAULT_BAG_VERSION,
    DEFAULT_IMAGE_TOPIC,
    FACE_AFFECT,
    FACE_AFFECT_ARRAY,
    IMAGE,
    STORAGES,
    BagError,
    affect_typestore,
    make_header,
)
from abaw_ros.offline.mcap_recovery import write_chunk_crcs
from abaw_ros.offline.outputs import (
    AFFECT_BAG,
    IMAGE_BAG,
    MARKER_KEY,
    OutputError,
    StagedBag,
    check_bag_output,
)
from abaw_ros.outputs import describe_os_error, write_faults
from abaw_ros.perception.affect_message import AffectMessageTypes, face_affect_array
from abaw_ros.perception.image import encode_compressed, encode_image

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

    from abaw_ros.offline.sources import SourceFrame
    from abaw_ros.perception.pipeline import FrameResult



def message_types(store: Typestore | None = None) -> AffectMessageTypes:
    """The ``rosbags`` classes of our messages, for :func:`face_affect_array`."""
    store = store or affect_typestore()
    return AffectMessageTypes(time=store.types["builtin_interfaces/msg/Time"],
                              header=store.types["std_msgs/msg/Header"],
                              roi=store.types["sensor_msgs/msg/RegionOfInterest"],
                              face=store.types[FACE_AFFECT], array=store.types[FACE_AFFECT_ARRAY])


def frame_result_to_msg(result: FrameResult, stamp: int, frame_id: str, image_shape: Sequence[int] | None = None,
                        store: Typestore | None = None, weights_trained: bool = False, model_id: str = "") -> Any:
    """``FrameResult`` -> a rosbags ``abaw_ros/msg/FaceAffectArray``
    (:func:`abaw_ros.perception.affect_message.face_affect_array` with the rosbags classes)."""
    return face_affect_array(result, stamp, frame_id, message_types(store), image_shape, weights_trained, model_id)

def _storage_plugin(storage: str) -> StoragePlugin:
    try:
        return STORAGES[storage]
    except KeyError:
        raise BagError(f"storage={storage!r}: choose from {list(STORAGES)}") from None


class _BagWriter:
    """One-topic bag writer (context manager) over ``rosbags.rosbag2.Writer``.

    ``path`` must be free, or (with ``overwrite``) a bag of the same ``kind`` that this
    package wrote (:mod:`abaw_ros.offline.outputs`); it may not overlap ``inputs``. The bag
    is written beside ``path`` and moved there by :meth:`close`, so an earlier bag stays
    whole until the new one is complete. Leaving the ``with`` block through an exception
    keeps what was written (:meth:`close` with ``complete=False``); :meth:`discard` drops it.
    MCAP chunks get their CRC (:func:`~abaw_ros.offline.mcap_recovery.write_chunk_crcs`).
    """

    kind = IMAGE_BAG
    # Leaving the ``with`` block through an exception keeps the frames written so far (a
    # results bag of bag-eval); False: nothing is left, and an empty bag is not kept either.
    keep_partial = True

    def __init__(self, path: str | Path, topic: str, msgtype: str, storage: str = "mcap",
                 overwrite: bool = False, inputs: Sequence[str | Path] = (),
                 version: int = DEFAULT_BAG_VERSION) -> None:
        if version not in BAG_VERSIONS:
            raise BagError(f"bag version {version!r}: choose from {list(BAG_VERSIONS)} (8 is read by Humble, "
                           f"Jazzy and Kilted; 9 by Jazzy and later only)")
        self.path = Path(path)
        self.topic = topic
        self.msgtype = msgtype
        self.storage = storage
        self.count = 0
        self.store = affect_typestore()
        plugin = _storage_plugin(storage)
        try:
            replace = check_bag_output(self.path, self.kind, overwrite, inputs)
        except OutputError as exc:
            raise BagError(str(exc)) from None
        self._stage = StagedBag(self.path, self.kind, replace)
        self._closed = False
        try:
            self._writer = Writer(self._stage.path, version=version, storage_plugin=plugin)
            self._writer.set_custom_data(MARKER_KEY, self.kind)
            self._writer.open()
            # The type store makes the writer embed the full definition (with dependencies).
            self._connection = self._writer.add_connection(topic, msgtype, typestore=self.store)
        except BaseException as exc:
            self._stage.discard()
            if isinstance(exc, WriterError):
                raise BagError(f"cannot write bag {str(self.path)!r}: {exc}") from exc
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write output bag {str(self.path)!r}: {describe_os_error(exc)}; "
                                  f"nothing of it was kept") from exc
            raise

    def write_message(self, msg: Any, log_time_ns: int) -> None:
        self.write_raw(self.store.serialize_cdr(msg, self.msgtype), log_time_ns)

    def write_raw(self, data: bytes, log_time_ns: int) -> None:
        """Write already serialized CDR bytes (used to copy or to build test input)."""
        with write_faults(self.path, "output bag"):  # disk full, read-only: one line naming the bag
            self._writer.write(self._connection, int(log_time_ns), data)
        self.count += 1

    def close(self, complete: bool = True) -> Path | None:
        """Finish the bag and move it into place; returns where it is. An incomplete bag
        with no message is dropped (None); one with messages is kept (see
        :meth:`StagedBag.commit`), and :attr:`path` then names where it went."""
        if self._closed:
            return self.path
        self._closed = True
        if self.count == 0 and (not complete or not self.keep_partial):
            self.discard()
            return None
        try:
            with write_faults(self.path, "output bag"):
                self._writer.close()
                if self.storage == "mcap":
                    for file in self._stage.path.glob("*.mcap"):
                        write_chunk_crcs(file)
                self.path = self._stage.commit(complete)
        except BaseException:
            # a bag that could not be finished is not readable: nothing to keep; the writer's
            # files are closed too, or a full disk would stay full until this process ends
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Drop the bag being written (nothing outside its staging folder is touched)."""
        self._closed = True
        try:
            with contextlib.suppress(Exception):  # the writer may have failed already
                self._writer.abort()
        finally:
            self._stage.discard()

    def __enter__(self) -> _BagWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and not self.keep_partial:
            self.discard()
        else:
            self.close(complete=exc_type is None)


class AffectBagWriter(_BagWriter):
    """Writes ``FaceAffectArray`` messages, one per processed frame."""

    kind = AFFECT_BAG

    def __init__(self, path: str | Path, topic: str = DEFAULT_AFFECT_TOPIC, storage: str = "mcap",
                 overwrite: bool = False, inputs: Sequence[str | Path] = (), weights_trained: bool = False,
                 model_id: str = "", version: int = DEFAULT_BAG_VERSION) -> None:
        super().__init__(path, topic, FACE_AFFECT_ARRAY, storage, overwrite, inputs, version)
        self.weights_trained, self.model_id = weights_trained, model_id

    def write(self, result: FrameResult, frame: SourceFrame) -> None:
        """The result of ``frame``: header stamp and frame_id copied from the image, written
        at the image's log time so both bags replay in step."""
        shape = frame.image.shape if frame.image is not None else None
        msg = frame_result_to_msg(result, frame.header_stamp_ns, frame.frame_id, shape, self.store,
                                  self.weights_trained, self.model_id)
        self.write_message(msg, frame.log_time_ns)


class ImageBagWriter(_BagWriter):
    """Writes camera frames as ``sensor_msgs/Image`` (``compression=None``, pixels in
    ``encoding``) or ``sensor_msgs/CompressedImage`` (``compression='jpeg'`` or ``'png'``).
    A camera bag is made from a whole source: one left unfinished by an exception, or
    without a frame, is dropped, never moved under its name."""

    keep_partial = False

    def __init__(self, path: str | Path, topic: str = DEFAULT_IMAGE_TOPIC, storage: str = "mcap", *,
                 compression: str | None = None, encoding: str = "bgr8", frame_id: str = "camera",
                 jpeg_quality: int = 90, overwrite: bool = False, version: int = DEFAULT_BAG_VERSION,
                 inputs: Sequence[str | Path] = ()) -> None:
        if compression is not None and compression not in ("jpeg", "png"):
            raise BagError(f"compression={compression!r}: choose jpeg, png or None (raw Image)")
        self.compression = compression
        self.encoding = encoding
        self.frame_id = frame_id
        self.jpeg_quality = jpeg_quality
        super().__init__(path, topic, IMAGE if compression is None else COMPRESSED_IMAGE, storage, overwrite,
                         inputs, version=version)

    def write(self, image_bgr: np.ndarray, stamp_ns: int, log_time_ns: int | None = None) -> None:
        header = make_header(stamp_ns, self.frame_id, self.store)
        if self.compression is None:
            height, width, step, data = encode_image(image_bgr, self.encoding)
            msg = self.store.types[IMAGE](header=header, height=height, width=width, encoding=self.encoding,
                                          is_bigendian=0, step=step, data=data)
        else:
            fmt, data = encode_compressed(image_bgr, self.compression, self.jpeg_quality)
            msg = self.store.types[COMPRESSED_IMAGE](header=header, format=fmt, data=data)
        self.write_message(msg, stamp_ns if log_time_ns is None else log_time_ns)
