#!/bin/bash
# The next device call for issue 5 (four H200s of one host; ~8.5 min of command time):
#   bash bench/runs/next_call.sh $OUT
# Written after session 5's call 2 ran past its limit: every timeout below adds up to at most
# 510 s, and every log goes straight to $OUT/all.log (prefixed), so a cut call still returns it.
#   phase A, at once (<= 330 s):
#     GPU 0:    compiled DDP, 1 process (train(), compile mode default under DDP)
#     GPU 1:    evaluation noslide, 1024 images, compiled (never measured with session 5's code)
#     GPU 2, 3: compiled DDP, 2 processes
#   phase B, alone (<= 180 s): the text tower compiled alone with tokens cut / not cut (GPU 0),
#     eager DDP 2 processes on GPUs 2-3 (session 5's slow 2-process runs used GPUs 0-1)
set -u
O=$1
export TORCHINDUCTOR_COMPILE_THREADS=16
R="python3 -m torch.distributed.run --standalone"
D="bench/ddp_bench.py --iterations 80 --log-every 10"
log() { sed -u "s/^/[$1] /" >> $O/all.log; }
nvidia-smi topo -m 2>&1 | log topo
(CUDA_VISIBLE_DEVICES=0 timeout 330 $R --nproc_per_node 1 $D --compile --out $O/ddp_c1.json 2>&1 | log c1) &
(CUDA_VISIBLE_DEVICES=1 timeout 330 python3 bench/engine_bench.py --sections eval_compile --eval-images 1024 \
   --budget-s 300 --out $O/eval_compiled.json 2>&1 | log eval) &
(CUDA_VISIBLE_DEVICES=2,3 timeout 330 $R --nproc_per_node 2 $D --compile --out $O/ddp_c2.json 2>&1 | log c2) &
wait
(for t in never always; do
   CUDA_VISIBLE_DEVICES=0 timeout 80 python3 bench/engine_breakdown.py --no-eager --only text_tower \
     --compile-components --set drseg.models.clip.TRUNCATE_TEXT=$t --out $O/text_$t.json 2>&1 | log text_$t
 done) &
(CUDA_VISIBLE_DEVICES=2,3 timeout 170 $R --nproc_per_node 2 $D --iterations 60 --out $O/ddp_e2_gpu23.json 2>&1 | log e2) &
wait
grep -e "ddp x" -e "images/s" -e "STEP" -e "text_tower" $O/all.log
