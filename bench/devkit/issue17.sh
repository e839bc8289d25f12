#!/usr/bin/env bash
# Issue 17's device runs, after the kit is in:
#   bash .devkit/setup.sh >/dev/null && source .devkit/env.sh && bash bench/devkit/issue17.sh STEP...
# (setup.sh --redis for the tune-MODEL-PREC steps: the farm's broker)
# Several steps run one after the other in one call (each call costs a transfer of the tree and
# the kit): give them STEP_TIMEOUT seconds each so that all fit the call's 600 s.
# Steps, in the order they are worth the device time:
#   test-attention  our BERT-layer kernels against TVM's on the GPU: every attention and layer
#             norm variant forced in turn, then timed (TUNEFARM_VENDOR_LOG: each one's time)
#   test-depthwise  the same for the depthwise convolution (MobileNetV2)
#   bert      BERT-base fp16 beside every torch.compile mode (the goal's "best mode")
#   bert-tc   the same, the shim timing every attention variant (0-3) and layer norm variant
#             (0, 1): what adding the new ones to its candidates gives (only after `test` passes)
#   cnn-fp16  MobileNetV2 and ResNet-50 fp16 (with the committed sm_90 pack) beside torch
#   rn50-fp32 ResNet-50 fp32, vendor rows with and without TF32
#   test-split-k    the split-K sketches' results on the GPU (tests/tuner/test_split_k.py)
#   split-k   split-K and 227 KB of shared memory against MetaSchedule's space on small-output
#             tasks (bench/split_k.py, SPLIT_K_TRIALS trials a run, default 64), torch beside
#   tune-MODEL-PREC   grow a pack (e.g. tune-mobilenet_v2-fp16): tune TUNE_SECONDS (default 300)
#             through the farm (split-K on), starting from packs/MODEL-PREC-sm_90 where it
#             exists; the new pack lands in $OUT/packs/MODEL-PREC-sm_90
#             tune-bert_base-fp16 tunes BERT_TRIALS (default 128) through torch.export and
#             tunefarm.compile on this GPU instead (the farm takes ONNX; the bert step's tasks
#             come from torch.export), without vendor kernels: with them, the chains go to the
#             vendor before tuning starts and are no tasks; the bert step then weighs the records
#             against the vendor
#   peers-MODEL-PREC  gpu_peers.py with the vendor kernels and the pack of the step above (or
#             the committed one), and a row with every chain on the vendor (the pack unused)
#             (PEERS_ARGS: more gpu_peers.py flags, e.g. --skip-untuned)
# Files land in $OUT named by the GPU (h100, h200), not the device's hostname (`vm`).
set -uo pipefail
[ $# -gt 0 ] || { echo "usage: issue17.sh test-attention|test-depthwise|bert|bert-tc|cnn-fp16|rn50-fp32|test-split-k|split-k ..." >&2; exit 2; }
OUT=${OUT:?"OUT: the folder whose files come back"}
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
tag=$(echo "$gpu" | grep -o -i -E 'h100|h200|a100|l40s' | head -1 | tr 'A-Z' 'a-z')
tag=${tag:-gpu}
limit=${STEP_TIMEOUT:-560}
worst=0

for step in "$@"; do
stamp=$(date -u +%Y%m%dT%H%M%SZ)
echo "issue17.sh $step on $gpu ($tag), $stamp"
case "$step" in
  test-attention | test-depthwise)
    log="$OUT/vendor_kernels_gpu_$step-$tag-$stamp.txt"
    TUNEFARM_VENDOR_LOG=1 timeout "$limit" python3 -m pytest -s -q -k "${step#test-}" \
      tests/tuner/test_vendor_kernels_gpu.py > "$log" 2>&1
    rc=$?
    grep -E "variant|bytes" "$log" | sort | uniq -c | head -40
    tail -5 "$log"
    ;;
  bert | bert-tc)
    if [ "$step" = bert-tc ]; then
      export TUNEFARM_ATTENTION_VARIANT=0,1,2,3 TUNEFARM_LAYER_NORM_VARIANT=0,1 TUNEFARM_VENDOR_LOG=1
    else  # the shim's own candidates, whatever step ran before
      unset TUNEFARM_ATTENTION_VARIANT TUNEFARM_LAYER_NORM_VARIANT
    fi
    from=()  # the committed pack, where there is one
    [ -d packs/bert_base-fp16-sm_90 ] && from=(--records-in packs/bert_base-fp16-sm_90)
    timeout "$limit" python3 bench/torch_path.py --target cuda --fp16 --source torchvision \
      --models bert_base_masked --vendor-kernels --torch-compile ${MAX_AUTOTUNE:+--max-autotune} \
      "${from[@]}" \
      --runs 50 --tag "$tag-$step" --out "$OUT" 2> "$OUT/torch_path_stderr-$tag-$step-$stamp.txt"
    rc=$?
    grep -E "attention|layer_norm" "$OUT/torch_path_stderr-$tag-$step-$stamp.txt" | head -20
    tail -5 "$OUT/torch_path_stderr-$tag-$step-$stamp.txt"
    ;;
  cnn-fp16)
    timeout "$limit" python3 bench/gpu_peers.py --models mobilenet_v2,resnet50 --precisions fp16 \
      --records packs/resnet50-fp16-sm_90 --vendor-kernels --out "$OUT"
    rc=$?
    ;;
  test-split-k)
    timeout "$limit" python3 -m pytest -q tests/tuner/test_split_k.py \
      > "$OUT/split_k_gpu_tests-$tag-$stamp.txt" 2>&1
    rc=$?
    tail -5 "$OUT/split_k_gpu_tests-$tag-$stamp.txt"
    ;;
  split-k)
    timeout "$limit" python3 bench/split_k.py --trials "${SPLIT_K_TRIALS:-64}" --tag "$tag" \
      --out "$OUT" 2> "$OUT/split_k_stderr-$tag-$stamp.txt"
    rc=$?
    tail -5 "$OUT/split_k_stderr-$tag-$stamp.txt"
    ;;
  rn50-fp32)
    timeout "$limit" python3 bench/gpu_peers.py --models resnet50 --precisions fp32 --vendor-kernels \
      --tf32 --out "$OUT"
    rc=$?
    ;;
  tune-bert_base-fp16)
    from=()
    [ -d packs/bert_base-fp16-sm_90 ] && from=(--records-in packs/bert_base-fp16-sm_90)
    timeout "$limit" python3 bench/torch_path.py --target cuda --fp16 --source torchvision \
      --models bert_base_masked --trials "${BERT_TRIALS:-128}" "${from[@]}" \
      --pack-out /tmp/bert-pack --runs 50 --tag "$tag-$step" --out "$OUT" \
      2> "$OUT/torch_path_stderr-$tag-$step-$stamp.txt"
    rc=$?
    tail -5 "$OUT/torch_path_stderr-$tag-$step-$stamp.txt"
    mkdir -p "$OUT/packs" && mv /tmp/bert-pack/bert_base_masked "$OUT/packs/bert_base-fp16-sm_90" || rc=1
    ;;
  tune-*)
    spec=${step#tune-}
    pack=${spec%-*}-${spec##*-}-sm_90
    from=()
    [ -d "packs/$pack" ] && from=(--records-in "packs/$pack")
    timeout "$limit" python3 bench/gpu_tune.py --models "${spec%-*}" --precisions "${spec##*-}" \
      --seconds "${TUNE_SECONDS:-300}" --concurrency 15 "${from[@]}" --records-out "/tmp/rec-$pack" \
      --out "$OUT" --tag "$tag" > "$OUT/gpu_tune_stdout-$tag-$pack-$stamp.txt" 2>&1
    rc=$?
    tail -5 "$OUT/gpu_tune_stdout-$tag-$pack-$stamp.txt"
    if [ -f "/tmp/rec-$pack/database_workload.json" ]; then
      python3 bench/make_pack.py "/tmp/rec-$pack" "$OUT/packs/$pack" || rc=1
    else
      echo "issue17.sh: $step exported no records (the farm needs setup.sh --redis)" >&2
      rc=1
    fi
    ;;
  peers-*)
    spec=${step#peers-}
    pack=${spec%-*}-${spec##*-}-sm_90
    records=$OUT/packs/$pack
    [ -d "$records" ] || records=packs/$pack
    extra=()
    [ "${spec##*-}" = fp32 ] && extra=(--tf32)
    timeout "$limit" python3 bench/gpu_peers.py --models "${spec%-*}" --precisions "${spec##*-}" \
      --records "$records" --vendor-kernels --vendor-only-row "${extra[@]}" ${PEERS_ARGS:-} \
      --out "$OUT"
    rc=$?
    ;;
  *)
    echo "issue17.sh: no step '$step'" >&2
    rc=2
    ;;
esac
[ "$rc" -eq 0 ] || worst=$rc
done
# gpu_peers names its file by the hostname.
for file in "$OUT"/*-"$(hostname)"-*; do
  [ -e "$file" ] && mv "$file" "${file/-$(hostname)-/-$tag-}"
done
ls "$OUT"
exit "$worst"
