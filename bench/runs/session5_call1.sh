#!/bin/bash
# Session 5, device call 1 (four H200s of one host): four independent runs, one per GPU, at once.
#   bash bench/runs/session5_call1.sh $OUT
# GPU 0: the paper-profile GPU test (the engine's own loop, compile_mode reduce-overhead)
# GPU 1: ViT-L/14 at 336, compiled reduce-overhead step
# GPU 2: the step as of session 4 (packed attention off), then with it (this session's change)
# GPU 3: each component of the step compiled alone (where the compiled step's time goes)
set -u
O=$1
L=/tmp/s5logs; mkdir -p $L
export TORCHINDUCTOR_COMPILE_THREADS=16  # four compiling processes share 64 cores
B="python3 bench/engine_breakdown.py --no-eager --compile --compile-mode reduce-overhead"
(CUDA_VISIBLE_DEVICES=0 DRSEG_SMOKE_OUT=$O/smoke.json timeout 420 \
   python3 -m pytest -q -s tests/test_profiles.py -k cuda > $L/0_smoke.log 2>&1; echo "smoke rc=$?" >> $O/rc.txt) &
(CUDA_VISIBLE_DEVICES=1 timeout 540 $B --preset vitl14-336 --no-components --label "s5 call1 vitl14-336" \
   --out $O/vitl.json > $L/1_vitl.log 2>&1; echo "vitl rc=$?" >> $O/rc.txt) &
(CUDA_VISIBLE_DEVICES=2 timeout 300 $B --no-components --set drseg.models.layers.PACKED_ATTENTION=never \
   --label "s5 call1 baseline (session 4 step)" --out $O/base.json > $L/2_base.log 2>&1; echo "base rc=$?" >> $O/rc.txt
 CUDA_VISIBLE_DEVICES=2 timeout 245 $B --no-components --label "s5 call1 packed attention" \
   --out $O/packed.json > $L/2_packed.log 2>&1; echo "packed rc=$?" >> $O/rc.txt) &
(CUDA_VISIBLE_DEVICES=3 timeout 540 python3 bench/engine_breakdown.py --compile-components --no-eager \
   --label "s5 call1 components compiled alone" --out $O/components.json > $L/3_comp.log 2>&1; echo "components rc=$?" >> $O/rc.txt) &
wait
for f in $L/*.log; do echo "=== $f"; grep -v -e "^W1" -e "Warning" $f | tail -n 40; done > $O/logs.txt
cat $O/rc.txt
