"""Benchmark of the running ``abaw_affect`` node: throughput, stamp-to-publish latency and
resident memory, over real DDS with the node in a process of its own.

    python benchmarks/bench_node.py                      # 1 and 4 faces, then a 10,000-frame soak
    python benchmarks/bench_node.py --frames 2000 --faces 1 --json out.json

The node is the installed ``affect_node`` executable started with ``--ros-args
--params-file`` (config/affect.yaml with ``backend: onnxruntime`` and the model); this
process publishes 640x480 bgr8 frames (the astronaut picture, 1 or 4 people) and listens
to ``affect``. Per face count:

- *paced*: frames at ``--rate`` Hz (30) for ``--seconds``; output rate, dropped frames, and
  latency from the frame's stamp to the arrival of its FaceAffectArray here (p50/p95/max;
  this includes the DDS hop, under a millisecond over shared memory);
- *saturated*: frames at ``--saturate-rate`` Hz (100), far above what the node can do; the
  output rate is the node's throughput (older frames are dropped, by design).

Each of ``--camera-qos`` (default: reliable, then best_effort) is a camera publisher with
that reliability (depth 10, as a driver's default QoS); the node runs with ``image_qos:
auto`` and follows it, so both modes are measured in one run on the same node.
``--no-profile`` runs both processes with Fast DDS at its defaults (no
``fastdds_large_frames.xml``): 640x480 frames then travel as UDP fragments, which a
best-effort subscription loses.

Then a soak of ``--frames`` frames at ``--rate`` Hz, switching between 1, 2 and 0 people
every 500 frames (tracks are born and die), printing the node's RSS every ``--rss-every``
frames. Without ``--model`` an untrained network is exported first (same speed as a
trained one). Other processes on the machine slow the node down: the load average is
printed with the results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # ros_harness: the node tests' harness, not installed

from rclpy.utilities import get_rmw_implementation_identifier  # noqa: E402
from ros_harness import FrameClient, NodeProcess, params_file, unique_namespace  # noqa: E402

from abaw_ros.ros.transport import PROFILE_VARIABLES, dds_settings_in_force  # noqa: E402


def export_untrained_bundle(out_dir: Path, window_length: int) -> Path:
    import torch

    from abaw_ros.models import ModelConfig, create_affect_net, export_onnx

    torch.manual_seed(0)
    model = create_affect_net(ModelConfig(window_length=window_length, n_levels=3)).eval()
    export_onnx(model, out_dir, trained=False)
    return out_dir


class FrameLoop:
    """Pre-built Image messages of ``frames`` consecutive scene frames, played forwards
    then backwards (continuous motion), so publishing costs no rendering time."""

    def __init__(self, faces: int, frames: int = 60) -> None:
        from abaw_ros.ros.conversions import bgr_to_image
        from abaw_ros.ros.demo_scene import DemoScene

        scene = DemoScene(faces=faces)
        self.messages = [bgr_to_image(scene.frame(i)) for i in range(frames)]
        self._cycle = 2 * frames - 2

    def message(self, index: int):
        k = index % self._cycle
        return self.messages[k if k < len(self.messages) else self._cycle - k]


def pipeline_reference(params: Path, faces: int, frames: int = 60) -> dict:
    """The same pipeline on the same frames in this process, without ROS: what the node
    would do if it added nothing. Run next to the node measurements, it tells the node's
    overhead apart from the load other processes put on the machine."""
    from abaw_ros.config import PipelineConfig
    from abaw_ros.perception.pipeline import PerceptionPipeline
    from abaw_ros.ros.conversions import image_to_bgr

    pipeline = PerceptionPipeline(PipelineConfig.from_yaml(params))
    loop = FrameLoop(faces)
    for i in range(24):
        pipeline.process(image_to_bgr(loop.message(i)), i)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(frames):
        pipeline.process(image_to_bgr(loop.message(24 + i)), i)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"faces": faces, "ms_per_frame": wall * 1e3 / frames, "cpu_ms_per_frame": cpu * 1e3 / frames}


def camera_publisher(client: FrameClient, reliability: str):
    """The camera: a publisher of ``image`` with a driver's depth 10 and ``reliability``."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return client.node.create_publisher(Image, "image", QoSProfile(depth=10, reliability=policy))


def publish_paced(client: FrameClient, loop: FrameLoop, rate: float, count: int, start: int = 0) -> list[int]:
    """Publish ``count`` frames at ``rate`` Hz, stamped with the publish time."""
    stamps = []
    period = 1.0 / rate
    next_time = time.monotonic()
    for i in range(start, start + count):
        msg = loop.message(i)
        stamp = client.now_ns()
        msg.header = client.header(stamp, "bench_camera")
        client.image_pub.publish(msg)
        stamps.append(stamp)
        next_time += period
        delay = next_time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return stamps


def dropped_total(client: FrameClient) -> int:
    reports = client.diagnostics()
    return int(reports[-1]["dropped_frames"]) if reports else 0


def measure(client: FrameClient, node: NodeProcess, loop: FrameLoop, rate: float, seconds: float,
            faces: int) -> dict:
    """Publish at ``rate`` for ``seconds``; output rate, latency, drops, faces seen, and the
    node's CPU time per answered frame (less sensitive to other load than wall time)."""
    count = max(int(rate * seconds), 1)
    drops_before = dropped_total(client)
    cpu_before = node.cpu_seconds()
    client.clear()
    started = time.monotonic()
    stamps = publish_paced(client, loop, rate, count)
    client.wait_for(lambda: bool(client.results_for(stamps[-1:])), timeout=3.0)
    elapsed = time.monotonic() - started
    cpu = node.cpu_seconds() - cpu_before
    time.sleep(1.2)  # one more diagnostics period for the drop count
    answers = client.results_for(stamps)
    busy = [d for d in client.diagnostics() if float(d.get("output_rate_hz", "0")) > 0]
    stages = sorted({k for d in busy for k in d if k.startswith("stage_ms_")})
    stage_ms = {k[len("stage_ms_"):]: float(np.nanmean([float(d[k]) for d in busy if k in d])) for k in stages}
    latencies = np.array([(r.arrival_ns - r.stamp_ns) / 1e6 for r in answers]) if answers else np.array([np.nan])
    return {
        "faces": faces,
        "input_hz": rate,
        "frames_sent": count,
        "frames_answered": len(answers),
        "output_fps": len(answers) / elapsed,
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "latency_ms_p95": float(np.percentile(latencies, 95)),
        "latency_ms_max": float(np.max(latencies)),
        "frames_lost_in_transport_fraction": float(client.diagnostics()[-1].get(
            "frames_lost_in_transport_fraction", "nan")) if client.diagnostics() else float("nan"),
        "dropped": dropped_total(client) - drops_before,
        "faces_per_answer": float(np.mean([len(r.msg.faces) for r in answers])) if answers else 0.0,
        "node_cpu_ms_per_frame": cpu * 1e3 / max(len(answers), 1),
        "node_stage_ms": stage_ms,
    }


def warm_up(client: FrameClient, loop: FrameLoop, frames: int = 24) -> None:
    """Frames in lockstep until tracks exist and windows are full."""
    for i in range(frames):
        msg = loop.message(i)
        stamp = client.now_ns()
        msg.header = client.header(stamp, "bench_camera")
        client.image_pub.publish(msg)
        client.wait_for(lambda s=stamp: bool(client.results_for([s])), timeout=2.0, poll=0.005)


def soak(client: FrameClient, node: NodeProcess, frames: int, rate: float, rss_every: int) -> dict:
    loops = {n: FrameLoop(n) for n in (1, 2, 0)}
    order = (1, 2, 0)
    samples: list[tuple[int, float, int, int]] = []  # frames sent, RSS MiB, answered, dropped
    client.clear()
    answered = 0
    print(f"\nsoak: {frames} frames at {rate:g} Hz, people 1 -> 2 -> 0 every 500 frames")
    print(f"{'frames':>8} {'RSS MiB':>9} {'answered':>9} {'dropped':>8}")
    samples.append((0, node.rss_mib(), 0, dropped_total(client)))
    print(f"{0:>8} {samples[-1][1]:>9.1f} {0:>9} {samples[-1][3]:>8}")
    period = 1.0 / rate
    next_time = time.monotonic()
    for sent in range(1, frames + 1):
        loop = loops[order[((sent - 1) // 500) % len(order)]]
        msg = loop.message(sent - 1)
        msg.header = client.header(client.now_ns(), "bench_camera")
        client.image_pub.publish(msg)
        if sent % rss_every == 0 or sent == frames:
            answered = len(client.received())
            samples.append((sent, node.rss_mib(), answered, dropped_total(client)))
            print(f"{sent:>8} {samples[-1][1]:>9.1f} {answered:>9} {samples[-1][3]:>8}", flush=True)
            if not node.alive():
                raise RuntimeError(f"the node exited during the soak:\n{node.log()[-2000:]}")
        next_time += period
        delay = next_time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    rss = np.array([s[1] for s in samples])
    x = np.array([s[0] for s in samples], dtype=float)
    half = len(samples) // 2
    slope = float(np.polyfit(x[half:], rss[half:], 1)[0] * 1000) if len(samples) - half >= 2 else float("nan")
    return {
        "frames": frames,
        "rate_hz": rate,
        "rss_mib": [round(float(v), 1) for v in rss],
        "rss_at_frames": [int(v) for v in x],
        "rss_first_mib": float(rss[0]),
        "rss_last_mib": float(rss[-1]),
        "rss_max_mib": float(rss.max()),
        "rss_slope_mib_per_1000_frames_second_half": slope,
        "answered": answered,
        "dropped": samples[-1][3],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="exported model bundle or .pt (default: untrained)")
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 4], help="people in the scene (default 1 4)")
    parser.add_argument("--rate", type=float, default=30.0, help="paced input rate, Hz (default 30)")
    parser.add_argument("--seconds", type=float, default=20.0, help="paced run length per face count (default 20)")
    parser.add_argument("--saturate-rate", type=float, default=100.0, help="input rate for throughput (default 100)")
    parser.add_argument("--saturate-seconds", type=float, default=10.0, help="saturated run length (default 10)")
    parser.add_argument("--frames", type=int, default=10_000, help="soak length in frames (0: no soak)")
    parser.add_argument("--rss-every", type=int, default=1000, help="print RSS every N soak frames")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="node parameter override (YAML value), e.g. -p detection_interval=3")
    parser.add_argument("--camera-qos", nargs="+", default=["reliable", "best_effort"],
                        choices=["reliable", "best_effort"], help="camera reliabilities to measure, in order")
    parser.add_argument("--no-profile", action="store_true",
                        help="Fast DDS at its defaults in both processes (no large-frame profile)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.no_profile:  # before this process's first participant; the node inherits it
        for variable in PROFILE_VARIABLES.values():  # both Fast DDS generations' names
            os.environ.pop(variable, None)

    import yaml

    overrides = {}
    for item in args.param:
        name, _, value = item.partition("=")
        overrides[name] = yaml.safe_load(value)
    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    window = int(overrides.get("window_length", 8))
    model = args.model or export_untrained_bundle(tmp / "bundle", window)
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    params = params_file(tmp, model_file_path=str(model), backend="onnxruntime",
                         max_faces=max(4, *args.faces), **overrides)
    settings = yaml.safe_load(params.read_text())["/**"]["ros__parameters"]
    namespace = unique_namespace("bench")
    node = NodeProcess(params, tmp / "node.log", namespace)
    client = FrameClient(namespace, domain_id=int(os.environ["ROS_DOMAIN_ID"]), name="bench_client", camera=False)
    client.image_pub = camera_publisher(client, args.camera_qos[0])
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        # What this process's DDS layer really uses (the node inherits the same variables).
        "fastdds_profile": dds_settings_in_force(get_rmw_implementation_identifier()).describe().get(
            "dds_profile", ""),
        "node_parameters": {k: settings[k] for k in ("backend", "num_threads", "detector", "detection_interval",
                                                     "window_length", "max_faces", "min_face_size")},
        "model": str(model),
        "runs": [],
    }
    try:
        if not client.wait_for_node(node, timeout=120):
            print(node.log()[-3000:], file=sys.stderr)
            return 1
        print(f"node pid {node.pid}, parameters {results['node_parameters']}")
        print(f"fast dds profile: {results['fastdds_profile']}")
        print(f"{'camera':>11} {'people':>6} {'input Hz':>9} {'out fps':>8} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'max ms':>8} {'lost':>5} {'dropped':>8} {'faces':>6} {'CPU ms/frame':>13}")
        for k, reliability in enumerate(args.camera_qos):
            if k:  # the next camera: the node follows it (image_qos: auto)
                client.node.destroy_publisher(client.image_pub)
                client.image_pub = camera_publisher(client, reliability)
            wanted = f"subscribed to {client.node.resolve_topic_name('image')} {reliability.replace('_', ' ')}"
            if not client.wait_for(lambda w=wanted: node.log().count(w) >= 1, timeout=20):
                print(f"the node did not subscribe {reliability}:\n{node.log()[-2000:]}", file=sys.stderr)
                return 1
            client.wait_for(lambda: client.image_pub.get_subscription_count() > 0, timeout=10)
            time.sleep(1.0)
            for faces in args.faces:
                loop = FrameLoop(faces)
                warm_up(client, loop)
                for rate, seconds in ((args.rate, args.seconds), (args.saturate_rate, args.saturate_seconds)):
                    if seconds <= 0:
                        continue
                    run = measure(client, node, loop, rate, seconds, faces)
                    run["camera_qos"] = reliability
                    results["runs"].append(run)
                    print(f"{reliability:>11} {faces:>6} {rate:>9.0f} {run['output_fps']:>8.1f} "
                          f"{run['latency_ms_p50']:>8.1f} {run['latency_ms_p95']:>8.1f} {run['latency_ms_max']:>8.1f} "
                          f"{run['frames_lost_in_transport_fraction']:>5.2f} {run['dropped']:>8} "
                          f"{run['faces_per_answer']:>6.2f} {run['node_cpu_ms_per_frame']:>13.1f}", flush=True)
                    print("       node stages, mean ms: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in run["node_stage_ms"].items()), flush=True)
        if args.frames > 0:
            results["soak"] = soak(client, node, args.frames, args.rate, args.rss_every)
            s = results["soak"]
            print(f"RSS first {s['rss_first_mib']:.1f} MiB, last {s['rss_last_mib']:.1f}, max {s['rss_max_mib']:.1f}; "
                  f"slope over the second half {s['rss_slope_mib_per_1000_frames_second_half']:+.2f} MiB/1000 frames")
        print("\nthe same pipeline without ROS, in this process (decode + process, lockstep):")
        for faces in args.faces:
            ref = pipeline_reference(params, faces)
            results.setdefault("pipeline_reference", []).append(ref)
            print(f"{faces:>6} people: {ref['ms_per_frame']:.1f} ms/frame ({1e3 / ref['ms_per_frame']:.1f} fps), "
                  f"CPU {ref['cpu_ms_per_frame']:.1f} ms/frame", flush=True)
        results["machine"]["loadavg_end"] = os.getloadavg()
        print(f"load average at start {results['machine']['loadavg_start']}, at end {results['machine']['loadavg_end']} "
              f"({os.cpu_count()} CPUs)")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    finally:
        client.close()
        code = node.stop()
        if code != 0:
            print(f"node exit code {code}:\n{node.log()[-2000:]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
