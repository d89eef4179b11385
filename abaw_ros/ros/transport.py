"""DDS transport settings for full-size camera frames on one machine.

See ``fastdds_large_frames.xml`` for why: with Fast DDS's default transports a 640x480
frame does not fit a shared-memory segment and best-effort delivery loses most frames on
a busy machine.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

LARGE_FRAMES_PROFILE = Path(__file__).with_name("fastdds_large_frames.xml")
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def prefer_large_frame_transport(env: MutableMapping[str, str] | None = None) -> bool:
    """Point Fast DDS at the large-frame profile unless a profile is already configured
    or another RMW is chosen. Must run before this process's first ``rclpy.init`` (Fast
    DDS reads the profile once per process); pass a child's ``env`` to set it there.
    Returns True when the profile was set."""
    env = os.environ if env is None else env
    rmw = env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") or "rmw_fastrtps_cpp"
    if not rmw.startswith("rmw_fastrtps") or env.get(PROFILE_VARIABLE):
        return False
    env[PROFILE_VARIABLE] = str(LARGE_FRAMES_PROFILE)
    return True
