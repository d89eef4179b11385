"""The Fast DDS profile on every distro: set under both generations' variable names (Fast
DDS 2.x, Humble and Jazzy, reads only FASTRTPS_DEFAULT_PROFILES_FILE; 3.x, Kilted, only
FASTDDS_DEFAULT_PROFILES_FILE), a user's own profile under either name kept and in force,
and ``/diagnostics`` saying what the running node's Fast DDS really loaded, over real DDS
on whichever distro this environment was built with."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abaw_ros.ros.transport import (
    LARGE_FRAMES_PROFILE,
    PROFILE_VARIABLES,
    dds_settings_in_force,
    loaded_fast_dds_version,
    prefer_large_frame_transport,
    share_profile_across_generations,
    shm_segment_size,
)

FASTRTPS, FASTDDS = PROFILE_VARIABLES[2], PROFILE_VARIABLES[3]
SEGMENT_PREFIXES = ("fastrtps_", "fastdds_")


def _profile(path: Path, segment: int, default: bool = True, name: str = "p") -> Path:
    """A Fast DDS profile file whose participant uses one shared-memory transport."""
    path.write_text(textwrap.dedent(f"""\
        <?xml version="1.0" encoding="UTF-8" ?>
        <dds xmlns="http://www.eprosima.com">
          <profiles>
            <transport_descriptors>
              <transport_descriptor>
                <transport_id>shm_{name}</transport_id>
                <type>SHM</type>
                <segment_size>{segment}</segment_size>
              </transport_descriptor>
            </transport_descriptors>
            <participant profile_name="{name}" is_default_profile="{'true' if default else 'false'}">
              <rtps>
                <userTransports><transport_id>shm_{name}</transport_id></userTransports>
                <useBuiltinTransports>false</useBuiltinTransports>
              </rtps>
            </participant>
          </profiles>
        </dds>
        """))
    return path


# --- which variables are set (no DDS involved) ----------------------------------------------
@pytest.mark.parametrize(("generation", "names"), [(2, [FASTRTPS]), (3, [FASTDDS]), (None, [FASTRTPS, FASTDDS])])
def test_the_large_frame_profile_is_set_under_the_names_that_fast_dds_reads(generation, names):
    env: dict[str, str] = {}
    assert prefer_large_frame_transport(env, generation)
    assert env == {name: str(LARGE_FRAMES_PROFILE) for name in names}


@pytest.mark.parametrize(("given", "generation", "added"), [
    (FASTDDS, 2, [FASTRTPS]),  # a Kilted habit on Humble or Jazzy: copied to the name 2.x reads
    (FASTRTPS, 3, [FASTDDS]),  # a Humble habit on Kilted (whose rmw reads it, deprecated)
    (FASTRTPS, 2, []),
    (FASTDDS, 3, []),
    (FASTRTPS, None, [FASTDDS]),
])
def test_a_users_profile_under_either_name_wins_and_reaches_the_name_fast_dds_reads(given, generation, added):
    env = {given: "/etc/robot/dds.xml"}
    assert not prefer_large_frame_transport(env, generation)
    assert env == {name: "/etc/robot/dds.xml" for name in [given, *added]}


def test_two_different_user_profiles_are_both_left_alone():
    env = {FASTRTPS: "/a.xml", FASTDDS: "/b.xml"}
    assert not prefer_large_frame_transport(env, None)
    assert share_profile_across_generations(env, None) == "/a.xml"
    assert env == {FASTRTPS: "/a.xml", FASTDDS: "/b.xml"}


@pytest.mark.parametrize("rmw", ["rmw_cyclonedds_cpp", "rmw_zenoh_cpp"])
def test_no_fast_dds_profile_is_set_for_another_rmw(rmw):
    env = {"RMW_IMPLEMENTATION": rmw}
    assert not prefer_large_frame_transport(env, None)
    assert env == {"RMW_IMPLEMENTATION": rmw}


def test_the_segment_in_force_is_the_last_loaded_default_participants(tmp_path):
    big = _profile(tmp_path / "big.xml", 16 * 2**20, name="big")
    small = _profile(tmp_path / "small.xml", 4 * 2**20, name="small")
    small_named_big = _profile(tmp_path / "small_named_big.xml", 4 * 2**20, name="big")
    not_default = _profile(tmp_path / "named.xml", 64 * 2**20, default=False, name="named")
    assert shm_segment_size(big) == 16 * 2**20
    assert shm_segment_size(not_default) is None  # only a participant that names it uses it
    assert shm_segment_size(big, small) == 4 * 2**20  # loaded later: its default replaces
    assert shm_segment_size(big, small_named_big) == 16 * 2**20  # a name already loaded is rejected
    assert shm_segment_size(big, not_default) == 16 * 2**20
    assert shm_segment_size(tmp_path / "missing.xml") is None


JAZZY_MAPS = "7f00-7f01 r-xp 0 fd:00 1 /venv/lib/libfastrtps.so.2.14\n"
KILTED_MAPS = "7f00-7f01 r-xp 0 fd:00 1 /venv/lib/libfastdds.so.3.2\n"


def test_settings_follow_the_loaded_library_not_the_variables(tmp_path):
    rtps = _profile(tmp_path / "rtps.xml", 8 * 2**20, name="rtps")
    dds = _profile(tmp_path / "dds.xml", 4 * 2**20, name="dds")
    env = {FASTRTPS: str(rtps), FASTDDS: str(dds), "SKIP_DEFAULT_XML_FILE": "1"}
    jazzy = dds_settings_in_force("rmw_fastrtps_cpp", env, maps=JAZZY_MAPS)
    kilted = dds_settings_in_force("rmw_fastrtps_cpp", env, maps=KILTED_MAPS)
    assert (jazzy.fast_dds_version, jazzy.profile_files, jazzy.segment_bytes) == ("2.14", (str(rtps),), 8 * 2**20)
    # Kilted's rmw loads the FASTRTPS_ file first, Fast DDS 3 its own after it.
    assert (kilted.fast_dds_version, kilted.profile_files, kilted.segment_bytes) == ("3.2", (str(rtps), str(dds)),
                                                                                     4 * 2**20)
    assert jazzy.describe()["dds_profile"] == f"{FASTRTPS}={rtps} ({FASTDDS}={dds} is not read by Fast DDS 2.14)"
    # Only the other generation's name set: not in force, and said so.
    only_3x = dds_settings_in_force("rmw_fastrtps_cpp", {FASTDDS: str(dds), "SKIP_DEFAULT_XML_FILE": "1"},
                                    maps=JAZZY_MAPS)
    assert only_3x.segment_bytes is None and only_3x.profile_files == ()
    assert only_3x.describe()["dds_profile"] == f"none: Fast DDS defaults ({FASTDDS}={dds} is not read by Fast DDS 2.14)"
    assert only_3x.describe()["largest_deliverable_frame"].startswith("524288 bytes")


def test_the_working_directory_profile_counts_unless_skipped(tmp_path):
    _profile(tmp_path / "DEFAULT_FASTRTPS_PROFILES.xml", 8 * 2**20, name="cwd")
    loaded = dds_settings_in_force("rmw_fastrtps_cpp", {}, maps=JAZZY_MAPS, cwd=tmp_path)
    assert loaded.segment_bytes == 8 * 2**20
    skipped = dds_settings_in_force("rmw_fastrtps_cpp", {"SKIP_DEFAULT_XML_FILE": "1"}, maps=JAZZY_MAPS, cwd=tmp_path)
    assert skipped.segment_bytes is None


def test_another_rmw_is_named_and_no_fast_dds_limit_is_claimed():
    values = dds_settings_in_force("rmw_cyclonedds_cpp", {FASTDDS: str(LARGE_FRAMES_PROFILE)}).describe()
    assert values["rmw_implementation"] == "rmw_cyclonedds_cpp"
    assert "16777216" not in values["largest_deliverable_frame"]


# --- over real DDS ----------------------------------------------------------------------------
def _installed_fast_dds() -> str:
    """The Fast DDS release pip installed in this environment (ros-fastdds for 3.x,
    ros-fastrtps for 2.x), the truth the node's report is checked against."""
    found = []
    for dist in ("ros-fastdds", "ros-fastrtps"):
        try:
            found.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            pass
    if len(found) != 1:
        pytest.skip(f"cannot tell the Fast DDS release from the installed packages ({found})")
    return found[0]


def test_the_library_this_process_loaded_is_the_installed_fast_dds():
    pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")
    expected = _installed_fast_dds()
    code = """
        import json, rclpy
        from abaw_ros.ros.transport import installed_fast_dds_generation, loaded_fast_dds_version
        before = installed_fast_dds_generation()  # from the library directories, or the mapped library
        rclpy.init()
        node = rclpy.create_node("dds_version_probe")
        print(json.dumps([before, loaded_fast_dds_version(), rclpy.get_rmw_implementation_identifier()]))
        node.destroy_node()
        rclpy.shutdown()
    """
    env = dict(os.environ, RMW_IMPLEMENTATION="rmw_fastrtps_cpp")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    generation, loaded, rmw = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded and _same_release(loaded, expected) and rmw == "rmw_fastrtps_cpp", (loaded, expected)
    assert generation == int(expected.split(".")[0])
    assert loaded_fast_dds_version("nothing mapped here\n") is None


def _same_release(loaded: str, installed: str) -> bool:
    """The library's version as far as its file name carries it ("3.2") is a prefix of the
    package's ("3.2.3")."""
    return installed == loaded or installed.startswith(loaded + ".")


def _largest_own_segment(pid: int, older: set[str]) -> int:
    """The largest Fast DDS shared-memory segment (bytes) the process mapped, leaving out
    ``older`` segments (those of the participants that existed before it, which it maps
    to read from them): what its own participant really uses, whatever any file says."""
    sizes: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        name = parts[-1].rsplit("/", 1)[-1] if len(parts) >= 6 else ""
        # Segments are /dev/shm/fastrtps_<id> (Fast DDS 2.x) or fastdds_<id> (3.x), beside *_port* files.
        if parts[-1].startswith("/dev/shm/") and name.startswith(SEGMENT_PREFIXES) and "_port" not in name:
            if Path(parts[-1]).name in older:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            sizes[parts[-1]] = sizes.get(parts[-1], 0) + end - start
    return max(sizes.values(), default=0)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dds_profiles")
    return {"rtps": _profile(tmp / "rtps.xml", 8 * 2**20, name="rtps"),
            "dds": _profile(tmp / "dds.xml", 4 * 2**20, name="dds"),
            "user": _profile(tmp / "user.xml", 4 * 2**20, name="user")}


# What the user sets -> the file in force and the variables the node reports, per Fast DDS generation.
NODE_CASES = {
    # Both names, different files: Jazzy reads only FASTRTPS_; Kilted loads both, FASTDDS_ last.
    "two_profiles": ({FASTRTPS: "rtps", FASTDDS: "dds"}, {2: ("rtps", [FASTRTPS]), 3: ("dds", [FASTRTPS, FASTDDS])}),
    # A Kilted habit on Jazzy: the node copies it to the name Fast DDS 2.x reads.
    "dds_name_only": ({FASTDDS: "user"}, {2: ("user", [FASTRTPS]), 3: ("user", [FASTDDS])}),
    # A Humble habit on Kilted: in force there too (and under FASTDDS_, which the node sets).
    "rtps_name_only": ({FASTRTPS: "user"}, {2: ("user", [FASTRTPS]), 3: ("user", [FASTRTPS, FASTDDS])}),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(NODE_CASES))
def test_diagnostics_report_the_profile_the_nodes_fast_dds_really_uses(case, profiles, tmp_path, ros_domain_id,
                                                                        model_bundle):
    pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")
    from ros_harness import FrameClient, NodeProcess, params_file, unique_namespace

    version = _installed_fast_dds()
    given, expected = NODE_CASES[case]
    in_force, variables = expected[int(version.split(".")[0])]
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES.values()}
    env.update({name: str(profiles[key]) for name, key in given.items()},
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp", SKIP_DEFAULT_XML_FILE="1", ABAW_ROS_CACHE=str(tmp_path / "cache"))
    segment = shm_segment_size(profiles[in_force])

    namespace = unique_namespace("dds")
    params = params_file(tmp_path, model_file_path=str(model_bundle), backend="onnxruntime", diagnostics_period=0.5)
    client = FrameClient(namespace, domain_id=ros_domain_id)
    older = {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(SEGMENT_PREFIXES)}
    node = NodeProcess(params, tmp_path / "node.log", namespace, env=env)
    try:
        def report() -> dict[str, str] | None:
            mine = [v for v in client.diagnostics("affect pipeline") if v["name"].startswith(namespace.strip("/"))]
            return mine[-1] if mine else None

        assert client.wait_for(lambda: report() is not None or not node.alive(), timeout=120), node.log()[-3000:]
        values = report()
        assert values is not None, node.log()[-3000:]
        mapped = _largest_own_segment(node.pid, older)
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-3000:]
    assert segment <= mapped < segment * 1.1, (mapped, segment)  # the node's participant really uses it
    assert values["rmw_implementation"] == "rmw_fastrtps_cpp"
    assert _same_release(values["fast_dds_version"], version), (values["fast_dds_version"], version)
    named = ", ".join(f"{name}={profiles[given.get(name, in_force)]}" for name in variables)
    assert values["dds_profile"].startswith(named), values  # (a variable Fast DDS does not read is noted after)
    assert values["largest_deliverable_frame"].startswith(f"{segment} bytes"), values
