#!/usr/bin/env bash
# The TensorRT check to run on the first NVIDIA machine (x86 with a driver, or a Jetson):
#
#   bash scripts/gpu_check.sh [--out DIR] [--trt "11 10"] [--cuda cu12|cu13] [--wheelhouse DIR]
#                             [--budget SECONDS] [--no-ort-gpu] [--report-only DIR]
#
# x86: makes one venv per TensorRT major (default 11 and 10) holding only the TensorRT wheels
#      (tensorrt-cu12 / tensorrt-cu13 == <major>.*), cuda-python and onnxruntime-gpu; the rest
#      (torch, onnxruntime, this package) comes from the project's environment
#      (scripts/setup_env.sh, run first if missing) through a .pth file.
# Jetson: one venv with --system-site-packages over JetPack's TensorRT (python3-libnvinfer) and
#      cuda-python for JetPack's CUDA.
# In each: tests/test_runtime_tensorrt.py (fp32/fp16/int8 parity with PyTorch, engine reuse,
# profile limits, auto choosing TensorRT) and `abaw-affect bench` for ONNX Runtime fp32 and
# TensorRT fp32/fp16/int8, then DIR/report.md: versions, build times, parity against ONNX
# Runtime, ms per frame and per window, ready to paste into docs/RUNTIME.md.
# Meant to finish within 10 minutes on one GPU (--budget, default 570 s; later steps are
# skipped, and said so in the report, when the budget runs out).
#
# Without internet, pass --wheelhouse DIR holding the wheels (pip download on another
# machine: tensorrt-cu12==11.* tensorrt-cu12==10.* cuda-python==12.* onnxruntime-gpu).
#
# Exit codes: 0 every check ran and passed; 1 a check failed or was cut by the budget (see the
# report); 2 bad usage or the environment could not be set up; 3 no NVIDIA GPU here (nothing run).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="gpu_check-$(date -u +%Y%m%d-%H%M%S)"
MAJORS="11 10"
CUDA_FLAVOUR=""
WHEELHOUSE=""
BUDGET=570
ORT_GPU=1
REPORT_ONLY=""
usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --trt) MAJORS="$2"; shift 2 ;;
    --cuda) CUDA_FLAVOUR="$2"; shift 2 ;;
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --no-ort-gpu) ORT_GPU=0; shift ;;
    --report-only) REPORT_ONLY="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check: --budget '$BUDGET': give whole seconds" >&2; exit 2 ;; esac
for m in $MAJORS; do
  case "$m" in 10|11) ;; *) echo "gpu_check: --trt '$MAJORS': majors are 10 and/or 11" >&2; exit 2 ;; esac
done
case "$CUDA_FLAVOUR" in ''|cu12|cu13) ;; *) echo "gpu_check: --cuda '$CUDA_FLAVOUR': cu12 or cu13" >&2; exit 2 ;; esac

START=$SECONDS
log() { printf '[gpu_check] %s\n' "$*"; }
left() { echo $(( BUDGET - (SECONDS - START) )); }

# -- the report (also --report-only DIR: rewrite DIR/report.md from the results there) ----------
write_report() {
  local dir="$1" py="${2:-python3}"
  "$py" - "$dir" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
lines = ["# TensorRT check", ""]
machine = out / "machine.txt"
if machine.is_file():
    lines += ["```", machine.read_text().strip(), "```", ""]
for run in sorted(out.glob("run-*")):
    lines += [f"## {run.name[4:]}", ""]
    env = run / "versions.json"
    if env.is_file():
        v = json.loads(env.read_text())
        lines.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
        lines.append("")
    junit = run / "tests.xml"
    if junit.is_file():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        lines.append(f"tests/test_runtime_tensorrt.py: {counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} "
                     f"passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped "
                     f"({float(suite.get('time', 0)):.0f} s)")
        for case in suite.iter("testcase"):
            for tag in ("failure", "error", "skipped"):
                item = case.find(tag)
                if item is not None:
                    msg = " ".join((item.get("message") or "").split())[:300]
                    lines.append(f"- {tag}: {case.get('name')}: {msg}")
        lines.append("")
    else:
        lines += ["tests/test_runtime_tensorrt.py: not run (see the log)", ""]
    bench = run / "bench.json"
    if bench.is_file():
        data = json.loads(bench.read_text())
        lines += ["| backend | prec | device | build s | enc ms/frame b1 | enc ms/frame b8 | head ms/window b1 | "
                  "head ms/window b8 | stream fps | enc fps b8 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["rows"]:
            lines.append(f"| {r['backend']} | {r['precision']} | {r['device']} | {r.get('build_seconds', 0):.1f} | "
                         f"{r['encoder_ms_per_frame_b1']:.3f} | {r['encoder_ms_per_frame_batched']:.3f} | "
                         f"{r['head_ms_per_window_b1']:.3f} | {r['head_ms_per_window_batched']:.3f} | "
                         f"{r['stream_fps']:.0f} | {r['encoder_fps_batched']:.0f} |")
        lines.append("")
        if data.get("accuracy"):
            lines += ["Parity (against ONNX Runtime fp32 on held-out LFW faces):", "",
                      "| candidate | min cos | max output \\|d\\| | VA max \\|d\\| | AU decisions | AH decisions |",
                      "|---|---|---|---|---|---|"]
            for a in data["accuracy"]:
                tasks = {t["task"]: t for t in a["tasks"]}
                def agree(name):
                    t = tasks.get(name)
                    return "-" if not t or t["decision_agreement"] is None else f"{100 * t['decision_agreement']:.1f}%"
                va = tasks.get("va", {}).get("max_abs")
                lines.append(f"| {a['candidate']} vs {a['reference']} | {min(m['cosine_min'] for m in a['maps']):.4f} | "
                             f"{max(t['max_abs'] for t in a['tasks']):.4f} | {'-' if va is None else f'{va:.4f}'} | "
                             f"{agree('au')} | {agree('ah')} |")
            lines.append("")
        for s in data.get("skipped", []):
            lines.append(f"- skipped {s}")
        lines.append("")
    else:
        lines += ["bench: not run (see the log)", ""]
    for note in sorted(run.glob("*.note")):
        lines.append(f"- {note.read_text().strip()}")
    lines.append("")
(out / "report.md").write_text("\n".join(lines).rstrip() + "\n")
print(out / "report.md")
PY
}

if [ -n "$REPORT_ONLY" ]; then
  [ -d "$REPORT_ONLY" ] || { echo "gpu_check: --report-only '$REPORT_ONLY': no such directory" >&2; exit 2; }
  write_report "$REPORT_ONLY"
  exit $?
fi

# -- is there an NVIDIA GPU? ------------------------------------------------------------------------
JETSON=0
if [ -f /etc/nv_tegra_release ] || grep -qi "jetson\|nvidia" /proc/device-tree/model 2>/dev/null; then
  JETSON=1
fi
if [ "$JETSON" = 1 ]; then
  if ! ls /dev/nvhost-* /dev/nvgpu* >/dev/null 2>&1 && ! ls /dev/nvidia* >/dev/null 2>&1; then
    echo "gpu_check: a Jetson without a usable GPU device node (/dev/nvhost-*, /dev/nvgpu*): check JetPack and this user's groups (video, render); nothing was run"
    exit 3
  fi
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (no nvidia-smi, not a Jetson); nothing was run. Run this on the NVIDIA machine."
  exit 3
elif ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu_check: nvidia-smi finds no GPU ($(nvidia-smi -L 2>&1 | head -1)); nothing was run"
  exit 3
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
{
  date -u +"%Y-%m-%d %H:%M UTC"
  uname -srm
  if [ "$JETSON" = 1 ]; then
    cat /proc/device-tree/model 2>/dev/null | tr -d '\0'; echo
    cat /etc/nv_tegra_release 2>/dev/null | head -1
  else
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader
    nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | head -1
  fi
} > "$OUT/machine.txt" 2>&1
log "machine: $(tr '\n' ' ' < "$OUT/machine.txt")"

PIP_SRC=()
if [ -n "$WHEELHOUSE" ]; then PIP_SRC=(--no-index --find-links "$WHEELHOUSE"); fi
STATUS=0

run_checks() {  # $1 venv python, $2 run directory, $3 seconds this run may take
  local py="$1" run="$2" share="$3" t end
  end=$(( SECONDS + share ))
  mkdir -p "$run"
  "$py" - > "$run/versions.json" 2>> "$run/log.txt" <<'PY'
import importlib, json, platform
found = {"python": platform.python_version()}
for name in ("tensorrt", "cuda.bindings", "onnxruntime", "onnxconverter_common", "torch"):
    try:
        found[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as exc:
        found[name] = f"unavailable ({type(exc).__name__})"
print(json.dumps(found))
PY
  log "$(basename "$run"): $(cat "$run/versions.json")"
  t=$(( end - SECONDS ))
  if [ "$t" -lt 60 ]; then
    echo "tests and bench skipped: the time budget ran out" > "$run/budget.note"; STATUS=1; return
  fi
  log "tests/test_runtime_tensorrt.py (up to $((t * 3 / 5)) s)"
  if ! timeout "$((t * 3 / 5))" "$py" -m pytest -q -p no:cacheprovider -rs -s tests/test_runtime_tensorrt.py \
      --junitxml="$run/tests.xml" >> "$run/log.txt" 2>&1; then
    STATUS=1
    log "tests failed or timed out (see $run/log.txt)"
  fi
  grep -q 'skipped="[1-9]' "$run/tests.xml" 2>/dev/null && STATUS=1  # a skip on a GPU machine is a failure here
  t=$(( end - SECONDS ))
  if [ "$t" -lt 30 ]; then
    echo "bench skipped: the time budget ran out" > "$run/budget.note"; STATUS=1; return
  fi
  log "abaw-affect bench (up to $t s)"
  if ! timeout "$t" "$py" -m abaw_ros.cli bench --backends onnxruntime:fp32,tensorrt:fp32,tensorrt:fp16,tensorrt:int8 \
      --iterations 50 --warmup 5 --batch 8 --stat min --engine-cache-dir "$run/engines" \
      --json "$run/bench.json" >> "$run/log.txt" 2>&1; then
    STATUS=1
    log "bench failed or timed out (see $run/log.txt)"
  fi
}

if [ "$JETSON" = 1 ]; then
  # JetPack's TensorRT lives in the system Python (python3-libnvinfer).
  if ! /usr/bin/python3 -c "import tensorrt" 2>/dev/null; then
    echo "gpu_check: JetPack's TensorRT is not importable by /usr/bin/python3: sudo apt install python3-libnvinfer (JetPack 6.1+)" >&2
    exit 2
  fi
  cuda_ver="$(sed -n 's/.*"cuda" *: *{ *"name"[^}]*"version" *: *"\([0-9]*\.[0-9]*\).*/\1/p' /usr/local/cuda/version.json 2>/dev/null | head -1)"
  [ -n "$cuda_ver" ] || cuda_ver="$(/usr/local/cuda/bin/nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
  [ -n "$cuda_ver" ] || { echo "gpu_check: cannot tell JetPack's CUDA version (/usr/local/cuda)" >&2; exit 2; }
  venv="$OUT/venv-jetpack"
  log "venv over JetPack's TensorRT (CUDA $cuda_ver): $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv" || exit 2
  "$venv/bin/python" -m pip install -q "${PIP_SRC[@]}" "cuda-python==${cuda_ver}.*" numpy onnx onnxruntime \
      onnxconverter-common onnxscript "opencv-python-headless<5" pyyaml scikit-image pytest torch timm \
      >> "$OUT/setup.log" 2>&1 || { echo "gpu_check: installing into $venv failed (see $OUT/setup.log)" >&2; exit 2; }
  "$venv/bin/python" -m pip install -q --no-deps -e . >> "$OUT/setup.log" 2>&1 || exit 2
  run_checks "$venv/bin/python" "$OUT/run-jetpack" "$(left)"
else
  # The project's environment carries torch, ONNX Runtime and this package.
  if [ ! -e .abaw_env ]; then
    log "no project environment yet: bash scripts/setup_env.sh"
    bash scripts/setup_env.sh >> "$OUT/setup.log" 2>&1 || { echo "gpu_check: scripts/setup_env.sh failed (see $OUT/setup.log)" >&2; exit 2; }
  fi
  # shellcheck disable=SC1091
  . ./.abaw_env
  base_site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if [ -z "$CUDA_FLAVOUR" ]; then
    drv_cuda="$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)"
    if [ "${drv_cuda:-12}" -ge 13 ]; then CUDA_FLAVOUR=cu13; else CUDA_FLAVOUR=cu12; fi
  fi
  cuda_major="${CUDA_FLAVOUR#cu}"
  todo=$(wc -w <<< "$MAJORS")
  for major in $MAJORS; do
    venv="$OUT/venv-trt$major"
    log "TensorRT $major.x venv ($CUDA_FLAVOUR): $venv"
    python -m venv "$venv" || exit 2
    vsite="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$base_site" > "$vsite/abaw_project_env.pth"  # after the venv's own packages
    pkgs=("tensorrt-$CUDA_FLAVOUR==$major.*" "cuda-python==$cuda_major.*")
    if [ "$ORT_GPU" = 1 ]; then pkgs+=(onnxruntime-gpu); fi
    if ! "$venv/bin/python" -m pip install -q "${PIP_SRC[@]}" "${pkgs[@]}" >> "$OUT/setup.log" 2>&1; then
      mkdir -p "$OUT/run-trt$major"
      echo "installing ${pkgs[*]} failed (see setup.log)" > "$OUT/run-trt$major/install.note"
      STATUS=1
      todo=$(( todo - 1 ))
      continue
    fi
    run_checks "$venv/bin/python" "$OUT/run-trt$major" "$(( $(left) / todo ))"
    todo=$(( todo - 1 ))
  done
fi

write_report "$OUT" > /dev/null && log "report: $OUT/report.md (paste into docs/RUNTIME.md)"
log "done in $((SECONDS - START)) s, exit $STATUS"
exit "$STATUS"
