"""Benchmark of the perception pipeline in one process: the cost per frame of each
streaming and copy-saving step side by side, as ratios to the raw fp32 encoder.

    python benchmarks/bench_pipeline.py                       # 1 / 2 / 4 people, all steps
    python benchmarks/bench_pipeline.py --faces 4 --rounds 7 --json out.json
    python benchmarks/bench_pipeline.py --soak 10000          # RSS over a 10,000-frame soak

Model: an untrained bundle of the shipped network (3 mixer levels, T=8; same speed as a
trained one), ONNX Runtime on CPU with ``--threads`` (2, like config/affect.yaml). Scene:
640x480 frames of ``DemoScene`` (the astronaut, moving and scaling; 1, 2 or 4 people).

Printed, side by side in one run:

1. **steps** (per people count): CPU time per frame of the pipeline after detection and
   tracking, for

   - ``today``: crops aligned at 112, resized and normalised one by one; whole windows of
     feature maps through the temporal head on every frame;
   - ``+tubelets``: exact tubelet streaming (per-frame projections summed per tubelet);
   - ``+straight``: faces warped straight to 224 into one batch, normalised in place;
   - ``+int8``: what ``precision: auto`` (the shipped default) picks: the encoder and the
     per-frame projection in int8 where they pass the accuracy gate (sample-face
     calibration), the row is left out where it runs fp32;

   with the detector replayed (detections computed once beforehand: zero detection cost,
   so the columns isolate alignment, encoder and head), then whole pipelines with real
   detectors: ``today+mtcnn/2`` (the path before these steps: MTCNN every 2nd frame, boxes
   kept in between), ``now+mtcnn/2`` (the same detection, these steps) and
   ``now+shipped`` (``--config``, config/affect.yaml: its detector, detection interval and
   landmark refinement). Each cost is a ratio to the raw fp32 ONNX Runtime encoder on the
   same crops (one batched ``encode`` call of that frame's faces), measured in the same
   rounds.
2. **head**: per-frame cost of the temporal head with the head on every frame at T=8 and
   T=32, whole windows vs tubelets, with the tubelet-embedding FLOPs per frame of both
   (torch FlopCounterMode): the embedding cost per frame no longer grows with T.
3. ``--soak N``: the shipped pipeline (``--config``, ``precision: auto``) over N frames (people 1 -> 2 -> 0 every 500 frames,
   so tracks and buffers are born and die), RSS every ``--rss-every`` frames.

Clock: process CPU time (``time.process_time``: every thread of this process; ONNX Runtime
thread spinning is off), so other processes' load matters less than for wall time. Rounds
interleave the variants; each figure is the minimum over rounds of the mean per frame.
The load average is printed: compare the ratios, not the absolute numbers.
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

from abaw_ros.config import PipelineConfig  # noqa: E402
from abaw_ros.perception.alignment import align_faces_rgb  # noqa: E402
from abaw_ros.perception.detection import FaceDetector  # noqa: E402
from abaw_ros.perception.pipeline import PerceptionPipeline  # noqa: E402
from abaw_ros.runtime import load_backend, preprocess_crops  # noqa: E402

ENCODER_RATIO_TARGET = 2.0  # 4-person pipeline / raw fp32 encoder on those 4 crops, at most


# -- variants ------------------------------------------------------------------------------
class WholeWindows:
    """A backend with its streaming graphs hidden: the pipeline then buffers feature maps
    and runs the head on whole windows, as before tubelet streaming."""

    streams_tubelets = False

    def __init__(self, backend) -> None:
        self._backend = backend

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


class CropThenResize(PerceptionPipeline):
    """Alignment as before: a 112 crop per face, BGR->RGB, resized to 224 and normalised
    one crop at a time."""

    def align(self, image, tracks):
        return preprocess_crops(align_faces_rgb(image, [t.landmarks for t in tracks], 112), self.metadata)


class ReplayDetector(FaceDetector):
    """Detections computed once per scene frame beforehand, looked up by the frame's
    buffer (the pipeline hands contiguous BGR frames on as they are)."""

    name = "replay"

    def __init__(self, frames: list[np.ndarray], detections: list) -> None:
        self.by_frame = {f.ctypes.data: d for f, d in zip(frames, detections, strict=True)}

    def detect(self, image_bgr):
        return self.by_frame[image_bgr.ctypes.data]


# -- helpers -------------------------------------------------------------------------------
def export_bundle(out_dir: Path, window_length: int) -> Path:
    import torch

    from abaw_ros.models import ModelConfig, create_affect_net, export_onnx

    torch.manual_seed(0)
    model = create_affect_net(ModelConfig(window_length=window_length, n_levels=3)).eval()
    export_onnx(model, out_dir, graphs=("encoder", "projection", "tubelet_head", "temporal_head"))
    return out_dir


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_ms_per_call(fn, calls: int) -> float:
    start = time.process_time()
    for i in range(calls):
        fn(i)
    return (time.process_time() - start) * 1e3 / calls


def scene_frames(faces: int, count: int) -> list[np.ndarray]:
    """``count`` frames of continuous motion: the scene's first ``count // 2 + 1`` frames
    played forwards then backwards (the same arrays again, so the loop never jumps and
    tracks live on)."""
    from abaw_ros.ros.demo_scene import DemoScene  # numpy + OpenCV only

    scene = DemoScene(faces=faces)
    forward = [scene.frame(i) for i in range(count // 2 + 1)]
    return (forward + forward[-2:0:-1])[:count]


def default_precision_backend(bundle: Path, threads: int, cache: Path):
    """The backend ``precision: auto`` (the shipped default) picks: int8 encoder and
    projection where they pass the accuracy gate against fp32, else fp32."""
    from abaw_ros.runtime.opening import load_auto_precision

    backend = load_auto_precision(bundle, backend="onnxruntime", engine_cache_dir=cache, num_threads=threads)
    return backend, f"precision auto -> {backend.precision}"


# -- sections ------------------------------------------------------------------------------
def steps(args, bundle: Path, cache: Path, results: dict) -> None:
    fp32 = load_backend(bundle, "onnxruntime", num_threads=args.threads)
    int8, int8_note = (None, "skipped (--no-int8)") if args.no_int8 else default_precision_backend(
        bundle, args.threads, cache)
    if int8 is not None and int8.precision != "int8":
        int8 = None
    # replayed detections: the detector every frame at no cost, no landmark refinement
    base = {"backend": "onnxruntime", "num_threads": args.threads, "warmup": False, "track_min_hits": 1,
            "detection_interval": 1, "refine_landmarks": False}
    # before these steps: MTCNN every 2nd frame, boxes kept in between
    old = {**base, "detector": "mtcnn", "detection_interval": 2, "crop_size": 112}
    shipped = PipelineConfig.from_yaml(args.config).to_dict() | {
        "backend": "onnxruntime", "num_threads": args.threads, "warmup": False, "track_min_hits": 1}
    print(f"\n== steps: CPU ms per frame (ratio to the raw fp32 encoder on the same crops); int8: {int8_note}")
    print(f"   shipped: {args.config.name}: detector {shipped['detector']} every {shipped['detection_interval']} "
          f"frames, refine_landmarks {shipped['refine_landmarks']}")
    final = int8 if int8 is not None else fp32
    for faces in args.faces:
        frames = scene_frames(faces, args.frames)
        replay = shipped_faces(PipelineConfig(**shipped), frames)
        variants: dict[str, PerceptionPipeline] = {
            "today": CropThenResize(PipelineConfig(**base, crop_size=112), backend=WholeWindows(fp32),
                                    detector=ReplayDetector(frames, replay)),
            "+tubelets": CropThenResize(PipelineConfig(**base, crop_size=112), backend=fp32,
                                        detector=ReplayDetector(frames, replay)),
            "+straight": PerceptionPipeline(PipelineConfig(**base), backend=fp32, detector=ReplayDetector(frames, replay)),
        }
        if int8 is not None:
            variants["+int8"] = PerceptionPipeline(PipelineConfig(**base), backend=int8,
                                                   detector=ReplayDetector(frames, replay))
        variants["today+mtcnn/2"] = CropThenResize(PipelineConfig(**old), backend=WholeWindows(fp32))
        variants["now+mtcnn/2"] = PerceptionPipeline(PipelineConfig(**old | {"crop_size": 0}), backend=final)
        variants["now+shipped"] = PerceptionPipeline(PipelineConfig(**shipped), backend=final)
        # the documented CPU-saving setting: a fresh estimate every 2nd frame per face
        variants["shipped, head/2"] = PerceptionPipeline(PipelineConfig(**shipped | {"head_interval": 2}),
                                                         backend=final)
        # raw encoder input: this frame's faces, aligned as the pipeline aligns them
        crops = []
        for f in frames:
            result = variants["+straight"].process(f, 0)
            crops.append(variants["+straight"]._batch[: len(result.faces)].copy())
        for pipe in variants.values():
            for i, f in enumerate(frames[:12]):  # births, warm windows, lazy init
                pipe.process(f, i)
        best: dict[str, float] = {}
        stage_ms: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            ms = cpu_ms_per_call(lambda i, c=crops: fp32.encode(c[i % len(c)]), len(frames))
            best["raw fp32 encoder"] = min(best.get("raw fp32 encoder", np.inf), ms)
            for name, pipe in variants.items():
                timings: list[dict] = []
                ms = cpu_ms_per_call(lambda i, p=pipe, t=timings, f=frames: t.append(p.process(f[i], i).timings),
                                     len(frames))
                if ms < best.get(name, np.inf):
                    best[name] = ms
                    stage_ms[name] = {k: float(np.mean([t[k] for t in timings])) for k in timings[0]}
        raw = best["raw fp32 encoder"]
        print(f"-- {faces} people (load average {os.getloadavg()[0]:.1f})")
        print(f"   {'variant':22s} {'CPU ms':>7s} {'ratio':>6s}   wall ms: detect+refine align encode temporal")
        print(f"   {'raw fp32 encoder':22s} {raw:7.2f} {1.0:6.2f}")
        for name in variants:
            st = stage_ms[name]
            print(f"   {name:22s} {best[name]:7.2f} {best[name] / raw:6.2f}   "
                  f"{st['detect'] + st.get('refine', 0.0):6.2f} {st['align']:5.2f} {st['encode']:6.2f} "
                  f"{st['temporal']:8.2f}")
        results["steps"][str(faces)] = {"cpu_ms": best, "ratio": {k: v / raw for k, v in best.items()},
                                        "stage_wall_ms": stage_ms}
    floor = network_flops(bundle_window_length=8)
    results["network_gflop"] = floor
    print(f"   the exact network per face-frame, head every frame (torch FlopCounterMode): encoder "
          f"{floor['encoder']:.3f} GFLOP, projection {floor['projection']:.3f}, head {floor['head']:.3f}: "
          f"{floor['ratio']:.2f}x the encoder's FLOPs before detection, alignment or any overhead")
    if 4 in args.faces:
        ratio = results["steps"]["4"]["ratio"]["now+shipped"]
        print(f"target: 4-person pipeline <= {ENCODER_RATIO_TARGET}x the raw fp32 encoder: {ratio:.2f}x "
              f"{'(met)' if ratio <= ENCODER_RATIO_TARGET else '(not met)'}; with head_interval 2: "
              f"{results['steps']['4']['ratio']['shipped, head/2']:.2f}x")


def shipped_faces(config: PipelineConfig, frames: list[np.ndarray]) -> list:
    """Per frame, the faces the shipped detect-then-track publishes (detector runs, mesh
    refinement and held faces included), as detections to replay: the replayed rows then
    align and encode the same faces as the whole-pipeline rows."""
    from abaw_ros.perception.detectors import create_detector
    from abaw_ros.perception.tracking import DetectAndTrack

    follower = DetectAndTrack.from_config(config, create_detector(config))
    for frame in frames:  # a first pass, so that every face is born
        follower.step(frame)
    return [[track.as_detection() for track in follower.step(frame)] for frame in frames]


def gflop(fn, *inputs) -> float:
    """GFLOP of one call of ``fn`` (torch FlopCounterMode, no autograd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*inputs)
    return counter.get_total_flops() / 1e9


def network_flops(bundle_window_length: int) -> dict[str, float]:
    """GFLOP of the shipped network per face-frame with the head on every frame: the
    encoder, the per-frame projection (all pt slices) and the head on the tubelet sums."""
    import torch

    from abaw_ros.models import create_affect_net

    net = create_affect_net(window_length=bundle_window_length, n_levels=3).eval()
    crop = torch.zeros(1, 3, 224, 224)
    maps = net.encoder(crop)
    out = {"encoder": gflop(net.encoder, crop),
           "projection": sum(gflop(m.embed.project_frames, f) for m, f in zip(net.head.mixers, maps, strict=True)),
           "head": gflop(net.head.forward_tubelets, [torch.zeros(1, *s) for s in net.head.tubelet_shapes])}
    out["ratio"] = (out["encoder"] + out["projection"] + out["head"]) / out["encoder"]
    return out


def head(args, tmp: Path, results: dict) -> None:
    import torch

    from abaw_ros.models import FaceWindows, create_affect_net

    print("\n== head on every frame: CPU ms per frame and tubelet-embedding GFLOP per frame, 1 face")
    print(f"   {'T':>3s} {'windows ms':>10s} {'tubelets ms':>11s} {'ratio':>6s}   "
          f"{'embed GFLOP windows':>19s} {'tubelets':>8s} {'ratio':>6s}")
    for t in args.head_windows:
        bundle = export_bundle(tmp / f"head_t{t}", t)
        backend = load_backend(bundle, "onnxruntime", num_threads=args.threads)
        meta = backend.metadata
        rng = np.random.default_rng(0)
        maps = [rng.standard_normal((1, *s), dtype=np.float32) for s in meta.feature_shapes]
        whole = FaceWindows(meta.feature_shapes, t)
        tubes = FaceWindows(meta.projection_shapes, t, projected=True)
        whole.push("f", maps)
        tubes.push("f", backend.project(maps))

        def with_windows(_i, whole=whole, maps=maps, backend=backend):
            whole.push("f", maps)
            backend.temporal(whole.windows(["f"]))

        def with_tubelets(_i, tubes=tubes, maps=maps, backend=backend):
            tubes.push("f", backend.project(maps))
            backend.temporal_tubelets(tubes.tubelet_sums(["f"]))

        ms = {"windows": np.inf, "tubelets": np.inf}
        for _ in range(args.rounds):
            ms["windows"] = min(ms["windows"], cpu_ms_per_call(with_windows, 10))
            ms["tubelets"] = min(ms["tubelets"], cpu_ms_per_call(with_tubelets, 10))
        net = create_affect_net(window_length=t, n_levels=3).eval()
        flops = {"windows": 0.0, "tubelets": 0.0}
        for mixer, shape in zip(net.head.mixers, net.feature_shapes, strict=True):
            for form, fn, x in (("windows", mixer.embed, torch.zeros(1, t, *shape)),
                                ("tubelets", mixer.embed.project_frames, torch.zeros(1, *shape))):
                flops[form] += gflop(fn, x)
        print(f"   {t:3d} {ms['windows']:10.2f} {ms['tubelets']:11.2f} {ms['windows'] / ms['tubelets']:6.2f}   "
              f"{flops['windows']:19.3f} {flops['tubelets']:8.3f} {flops['windows'] / flops['tubelets']:6.1f}")
        results["head"][str(t)] = {"cpu_ms": ms, "embed_gflop": flops}


def soak(args, bundle: Path, results: dict) -> None:
    config = PipelineConfig.from_yaml(args.config)
    config = PipelineConfig(**config.to_dict() | {"backend": "onnxruntime", "num_threads": args.threads})
    backend, _note = default_precision_backend(bundle, args.threads, bundle.parent / "cache")
    pipeline = PerceptionPipeline(config, backend=backend)
    scenes = {n: scene_frames(n, 60) for n in (1, 2, 0)}
    order = (1, 2, 0)
    samples = []
    print(f"\n== soak: {args.soak} frames, people 1 -> 2 -> 0 every 500 frames; RSS MiB every {args.rss_every}")
    start = time.process_time()
    for i in range(args.soak + 1):
        if i % args.rss_every == 0:
            samples.append((i, rss_mib()))
            print(f"   frame {i:6d}  RSS {samples[-1][1]:7.1f} MiB  CPU {time.process_time() - start:6.1f} s", flush=True)
        if i == args.soak:
            break
        frames = scenes[order[(i // 500) % 3]]
        pipeline.process(frames[i % len(frames)], i)
    x = np.array([s[0] for s in samples], float)
    rss = np.array([s[1] for s in samples])
    half = len(samples) // 2
    slope = float(np.polyfit(x[half:], rss[half:], 1)[0] * 1000) if len(samples) - half >= 2 else float("nan")
    print(f"   RSS first {rss[0]:.1f}, last {rss[-1]:.1f}, max {rss.max():.1f} MiB; "
          f"slope over the second half {slope:+.2f} MiB per 1000 frames")
    results["soak"] = {"frames": [int(v) for v in x], "rss_mib": [float(v) for v in rss], "slope_second_half": slope}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=40, help="frames per round and variant")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (minimum taken)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per session")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "affect.yaml",
                        help="the shipped parameters (detector, intervals) of the whole-pipeline rows")
    parser.add_argument("--head-windows", type=int, nargs="*", default=[8, 32], help="T values of the head section")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 encoder row")
    parser.add_argument("--soak", type=int, default=0, help="also run a soak of this many frames")
    parser.add_argument("--rss-every", type=int, default=1000)
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
                     "steps": {}, "head": {}}
    print(f"load average at start {os.getloadavg()}, {os.cpu_count()} CPUs, {args.threads} threads per session")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundle = export_bundle(tmp / "bundle", 8)
        if not args.skip_steps:
            steps(args, bundle, tmp / "cache", results)
        if args.head_windows:
            head(args, tmp, results)
        if args.soak:
            soak(args, bundle, results)
    results["machine"]["loadavg_end"] = os.getloadavg()
    print(f"load average at end {results['machine']['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
