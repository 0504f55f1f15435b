#!/bin/bash
# Session 5, device call 2 (four H200s of one host). KEPT AS RUN, IT FAILED: the call ran past
# its 600 s with nothing saved but an empty step.json. Its timeouts added up to more than the
# call's limit (phase A up to 320 s, then phase B 3 x 100 s), and its logs were copied to $OUT
# only at the end. bench/runs/next_call.sh is the corrected plan.
#   bash bench/runs/session5_call2.sh $OUT
# Phase A, at once:
#   GPU 0:    compiled DDP, 1 process (the engine's train(), compile mode default under DDP)
#   GPU 1:    the step with packed attention and cut text tokens, compiled reduce-overhead;
#             then the text tower compiled alone with tokens cut and not cut (same process kind)
#   GPU 2, 3: compiled DDP, 2 processes
# Phase B, alone on the host: eager DDP with 4, 2 and 1 processes.
set -u
O=$1
L=/tmp/s5logs; mkdir -p $L /tmp/ddp
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 80 --log-every 10"
(CUDA_VISIBLE_DEVICES=0 timeout 320 $R --nproc_per_node 1 $D --compile --out /tmp/ddp/c1.json \
   > $L/0_ddp_c1.log 2>&1; echo "ddp_c1 rc=$?" >> $L/rc.txt) &
(CUDA_VISIBLE_DEVICES=1 timeout 280 python3 bench/engine_breakdown.py --no-eager --compile \
   --compile-mode reduce-overhead --no-components --label "s5 call2 packed attention + cut text" \
   --out $O/step.json > $L/1_step.log 2>&1; echo "step rc=$?" >> $L/rc.txt
 for t in never always; do
   CUDA_VISIBLE_DEVICES=1 timeout 60 python3 bench/engine_breakdown.py --no-eager --only text_tower \
     --compile-components --set drseg.models.clip.TRUNCATE_TEXT=$t --label "s5 call2 text $t" \
     --out $O/text_$t.json > $L/1_text_$t.log 2>&1; echo "text_$t rc=$?" >> $L/rc.txt
 done) &
(CUDA_VISIBLE_DEVICES=2,3 timeout 320 $R --nproc_per_node 2 $D --compile --out /tmp/ddp/c2.json \
   > $L/2_ddp_c2.log 2>&1; echo "ddp_c2 rc=$?" >> $L/rc.txt) &
wait
for n in 4 2 1; do
  CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((n-1))) timeout 100 $R --nproc_per_node $n $D --iterations 60 \
    --out /tmp/ddp/e$n.json > $L/3_ddp_e$n.log 2>&1; echo "ddp_e$n rc=$?" >> $L/rc.txt
done
python3 bench/ddp_bench.py --summarize /tmp/ddp/e*.json --out /tmp/ddp/eager_summary.json >> $L/4_sum.log 2>&1
python3 bench/ddp_bench.py --summarize /tmp/ddp/c*.json --out /tmp/ddp/compiled_summary.json >> $L/4_sum.log 2>&1
tar czf $O/ddp.tgz -C /tmp ddp
for f in $L/*; do echo "=== $f"; grep -v -e "^W1" -e "Warning" $f | tail -n 30; done > $O/logs.txt
cat $L/rc.txt $L/4_sum.log
