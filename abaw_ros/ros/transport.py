"""DDS transport settings for full-size camera frames, and what a process really uses.

See ``fastdds_large_frames.xml`` for why: with Fast DDS's default transports a 640x480
frame does not fit a shared-memory segment and best-effort delivery loses most frames on
a busy machine. The profile's segment (16 MiB) is also the largest frame that is
delivered whole.

Which variable names the profile file depends on the Fast DDS generation
(``src/cpp/rtps/xmlparser/XMLParserCommon.cpp`` on the 2.6.x and 2.14.x branches,
``src/cpp/xmlparser/XMLParserCommon.cpp`` on 3.x):

- Fast DDS 2.x (Humble 2.6, Jazzy 2.14) reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``;
- Fast DDS 3.x (Kilted) reads only ``FASTDDS_DEFAULT_PROFILES_FILE``; Kilted's
  rmw_fastrtps (9.3, ros2/rmw_fastrtps#806) loads a ``FASTRTPS_DEFAULT_PROFILES_FILE``
  too, before it, and logs that the name is deprecated.

After the variable's file each loads ``DEFAULT_FASTRTPS_PROFILES.xml`` /
``DEFAULT_FASTDDS_PROFILES.xml`` from the working directory unless
``SKIP_DEFAULT_XML_FILE=1`` (``XMLProfileManager::loadDefaultXMLFile``). Measured here on
Kilted (shared-memory segments of the participant): of two files whose default
participant profiles have different names the one loaded later is in force; a profile
whose name was already loaded is rejected (``Error adding profile``) and the first stays.

So the profile is set under the name(s) the installed Fast DDS reads (both when that
cannot be told), a profile the user gave under one name is copied to the name this Fast
DDS reads, and :func:`dds_settings_in_force` asks the running process which library it
loaded before saying which file is in force.
"""
from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

LARGE_FRAMES_PROFILE = Path(__file__).with_name("fastdds_large_frames.xml")
# Fast DDS major version -> the variable it reads and the file it loads from the working directory.
PROFILE_VARIABLES: dict[int, str] = {
    2: "FASTRTPS_DEFAULT_PROFILES_FILE",
    3: "FASTDDS_DEFAULT_PROFILES_FILE",
}
WORKING_DIRECTORY_PROFILES: dict[int, str] = {
    2: "DEFAULT_FASTRTPS_PROFILES.xml",
    3: "DEFAULT_FASTDDS_PROFILES.xml",
}
SKIP_WORKING_DIRECTORY_PROFILE = "SKIP_DEFAULT_XML_FILE"
FAST_DDS_RMW_PREFIX = "rmw_fastrtps"  # rmw_fastrtps_cpp and rmw_fastrtps_dynamic_cpp
DEFAULT_RMW = "rmw_fastrtps_cpp"  # ROS 2's default since Foxy (REP-2000)
SHM_DEFAULT_SEGMENT = 512 * 1024  # Fast DDS's shared-memory segment when none is configured
# The shared library of each generation: libfastrtps.so.2.14.5 (2.x), libfastdds.so.3.2 (3.x).
_FAST_DDS_LIBRARY = re.compile(r"lib(fastrtps|fastdds)\.so\.(\d+)\.(\d+)(?:\.(\d+))?")


def chosen_rmw(env: Mapping[str, str] | None = None) -> str:
    """The RMW that ``RMW_IMPLEMENTATION`` selects (ROS's default when unset)."""
    env = os.environ if env is None else env
    return env.get("RMW_IMPLEMENTATION", "") or DEFAULT_RMW


def _version_from_names(text: str) -> str | None:
    found = list(_FAST_DDS_LIBRARY.finditer(text))
    if not found:
        return None
    # Where the names differ, the longest carries the most of the version.
    match = max(found, key=lambda m: len(m.group(0)))
    return ".".join(part for part in match.groups()[1:] if part is not None)


def loaded_fast_dds_version(maps: str | None = None) -> str | None:
    """The version of the Fast DDS library mapped into this process, as far as its file
    name carries it (``libfastrtps.so.2.14.5`` -> "2.14.5"; the ROS wheels ship
    ``libfastdds.so.3.2`` -> "3.2"), from ``/proc/self/maps``; None when none is loaded
    (another RMW; with Fast DDS, loaded by ``rclpy.init`` at the latest) or where ``/proc``
    does not exist. The major version is the generation, which decides the variable."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    return _version_from_names(maps)


def installed_fast_dds_generation(env: Mapping[str, str] | None = None) -> int | None:
    """The Fast DDS generation (2 or 3) this process will load, before ``rclpy.init``: the
    library already mapped, else the one found in the library directories of the ROS
    environment (``LD_LIBRARY_PATH``, ``<prefix>/lib`` of ``AMENT_PREFIX_PATH`` and of
    this Python). None when none or both generations are found."""
    env = os.environ if env is None else env
    loaded = loaded_fast_dds_version()
    if loaded:
        return int(loaded.split(".")[0])
    dirs = [Path(p) for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) / "lib" for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(sys.prefix) / "lib")
    generations = set()
    for directory in dirs:
        try:
            names = [p.name for p in directory.glob("lib*.so.*") if p.name.startswith(("libfastdds.", "libfastrtps."))]
        except OSError:
            continue
        for name in names:
            version = _version_from_names(name)
            if version:
                generations.add(int(version.split(".")[0]))
    return generations.pop() if len(generations) == 1 else None


def _read_by(generation: int | None) -> list[str]:
    """The profile variables that make a file the participant's profile: the generation's
    own (Kilted's rmw also loads ``FASTRTPS_...`` but warns that it is deprecated, so it
    is not set there); both when the generation is unknown."""
    if generation in PROFILE_VARIABLES:
        return [PROFILE_VARIABLES[generation]]
    return list(PROFILE_VARIABLES.values())


def share_profile_across_generations(env: MutableMapping[str, str] | None = None,
                                     generation: int | None = -1) -> str | None:
    """A profile the user gave under one variable name only is also set under the name
    this Fast DDS reads (``generation``; -1: find it with
    :func:`installed_fast_dds_generation`), so the file the user chose is in force on
    every distro (``FASTDDS_...`` given on Jazzy, or ``FASTRTPS_...`` on Kilted, where its
    support is deprecated). Variables already set are never changed. Returns the user's
    profile file, or None when none is set."""
    env = os.environ if env is None else env
    given = [env[name] for name in PROFILE_VARIABLES.values() if env.get(name)]
    if not given:
        return None
    if generation == -1:
        generation = installed_fast_dds_generation(env)
    for name in _read_by(generation):
        if not env.get(name):
            env[name] = given[0]
    return given[0]


def prefer_large_frame_transport(env: MutableMapping[str, str] | None = None,
                                 generation: int | None = -1) -> bool:
    """Point Fast DDS at the large-frame profile, under the variable name(s) the installed
    Fast DDS reads (``generation`` as in :func:`share_profile_across_generations`), unless
    a profile is already configured (then that one is kept, and shared to the name this
    Fast DDS reads) or another RMW is chosen. Must run before this process's first
    ``rclpy.init`` (Fast DDS reads the profile once per process); pass a child's ``env``
    to set it there. Returns True when the large-frame profile was set."""
    env = os.environ if env is None else env
    if not chosen_rmw(env).startswith(FAST_DDS_RMW_PREFIX):
        return False
    if generation == -1:
        generation = installed_fast_dds_generation(env)
    if share_profile_across_generations(env, generation) is not None:
        return False
    for name in _read_by(generation):
        env[name] = str(LARGE_FRAMES_PROFILE)
    return True


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class _DefaultParticipant:
    name: str
    segments: tuple[int, ...]  # the shared-memory segments of its user transports


def _default_participant(profile: str | Path) -> _DefaultParticipant | None:
    """The default participant profile (``is_default_profile="true"``) of a profile file
    and its shared-memory segments; None when the file cannot be read or has none."""
    try:
        root = ET.parse(profile).getroot()
    except (OSError, ET.ParseError):
        return None
    segments: dict[str, int] = {}
    for descriptor in root.iter():
        if _local(descriptor.tag) != "transport_descriptor":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in descriptor}
        if fields.get("type") == "SHM":
            size = fields.get("segment_size", "")
            segments[fields.get("transport_id", "")] = int(size) if size.isdigit() else SHM_DEFAULT_SEGMENT
    default = None
    for participant in root.iter():
        if _local(participant.tag) == "participant" and participant.get("is_default_profile") == "true":
            default = participant
    if default is None:
        return None
    used = [(el.text or "").strip() for el in default.iter() if _local(el.tag) == "transport_id"]
    return _DefaultParticipant(default.get("profile_name", ""), tuple(segments[t] for t in used if t in segments))


def shm_segment_size(*profiles: str | Path) -> int | None:
    """The largest shared-memory segment (bytes) of the default participant profile in
    force after Fast DDS loaded ``profiles`` in this order (a later default profile
    replaces an earlier one, unless its name was already loaded), or None when they set
    no such transport: then Fast DDS's defaults apply, 512 KiB shared memory and larger
    samples over UDP fragments.

    A sample larger than the segment does not fit it whole: Fast DDS then moves it in
    fragments through the segment, and with best-effort (sensor-data) QoS a growing
    share of such frames never arrives, with no error on either side. Measured here with
    the 16 MiB profile at 10 Hz between two processes: 12 MB frames 17 of 20 arrived,
    16.7 MB 16 of 20, 27 MB 11 of 20, 48 MB 2 of 20.
    """
    in_force: _DefaultParticipant | None = None
    loaded_names: set[str] = set()
    for profile in profiles:
        found = _default_participant(profile)
        if found is None or found.name in loaded_names:
            continue
        loaded_names.add(found.name)
        in_force = found
    return max(in_force.segments) if in_force and in_force.segments else None


@dataclass(frozen=True)
class DdsSettings:
    """What the DDS layer of this process really runs with."""

    rmw: str
    fast_dds_version: str | None = None  # None: not Fast DDS, or not determinable
    profile_variables: tuple[str, ...] = ()  # the variables whose files were loaded
    profile_files: tuple[str, ...] = ()  # the files loaded, in order
    segment_bytes: int | None = None  # the largest shared-memory segment in force
    note: str = ""  # why a setting that was asked for is not in force

    @property
    def fast_dds(self) -> bool:
        return self.rmw.startswith(FAST_DDS_RMW_PREFIX)

    def describe(self) -> dict[str, str]:
        """The ``/diagnostics`` values: the RMW, the Fast DDS version, the profile in force
        and the largest frame it delivers whole."""
        if not self.fast_dds:
            return {
                "rmw_implementation": self.rmw,
                "dds_profile": "not Fast DDS: set by that RMW's own configuration (see docs/NODE.md)",
                "largest_deliverable_frame": f"not known to the node ({self.rmw}'s configuration decides)",
            }
        if self.profile_files:
            named = [f"{v}={f}" for v, f in zip(self.profile_variables, self.profile_files, strict=False)]
            named += list(self.profile_files[len(self.profile_variables):])  # the working directory's
            profile = ", ".join(named)
        else:
            profile = "none: Fast DDS defaults"
        if self.note:
            profile = f"{profile} ({self.note})"
        if self.segment_bytes:
            largest = (f"{self.segment_bytes} bytes (Fast DDS shared-memory segment; larger frames "
                       f"are mostly lost)")
        else:
            largest = (f"{SHM_DEFAULT_SEGMENT} bytes over shared memory (Fast DDS defaults); larger frames "
                       f"travel as UDP fragments and best-effort ones are mostly lost")
        return {
            "rmw_implementation": self.rmw,
            "fast_dds_version": self.fast_dds_version or "unknown (its library was not found in this process)",
            "dds_profile": profile,
            "largest_deliverable_frame": largest,
        }


def dds_settings_in_force(rmw: str | None = None, env: Mapping[str, str] | None = None,
                          maps: str | None = None, cwd: str | Path | None = None) -> DdsSettings:
    """The DDS settings this process runs with. Call it after ``rclpy.init`` and pass
    ``rclpy.get_rmw_implementation_identifier()`` as ``rmw``: the library that was loaded,
    not the variables that asked for one, decides which profile files count."""
    env = os.environ if env is None else env
    rmw = rmw or chosen_rmw(env)
    if not rmw.startswith(FAST_DDS_RMW_PREFIX):
        return DdsSettings(rmw=rmw)
    version = loaded_fast_dds_version(maps)
    generation = int(version.split(".")[0]) if version else None
    if generation == 2:
        variables = [PROFILE_VARIABLES[2]]
    elif generation == 3:  # rmw_fastrtps loads the deprecated name first, then Fast DDS its own
        variables = [PROFILE_VARIABLES[2], PROFILE_VARIABLES[3]]
    else:
        values = {env.get(name, "") for name in PROFILE_VARIABLES.values()}
        if values == {""}:
            return DdsSettings(rmw=rmw, fast_dds_version=version)
        note = "Fast DDS version unknown: cannot tell which profile variable it reads"
        return DdsSettings(rmw=rmw, fast_dds_version=version, note=note)
    used = [name for name in variables if env.get(name)]
    files = [env[name] for name in used]
    ignored = [f"{name}={env[name]}" for name in PROFILE_VARIABLES.values()
               if name not in variables and env.get(name) and env[name] not in files]
    note = f"{', '.join(ignored)} is not read by Fast DDS {version}" if ignored else ""
    if env.get(SKIP_WORKING_DIRECTORY_PROFILE, "")[:1] != "1":
        local = Path(cwd or os.getcwd()) / WORKING_DIRECTORY_PROFILES[generation]
        if local.is_file():
            files.append(str(local))
    return DdsSettings(rmw=rmw, fast_dds_version=version, profile_variables=tuple(used),
                       profile_files=tuple(files), segment_bytes=shm_segment_size(*files), note=note)
