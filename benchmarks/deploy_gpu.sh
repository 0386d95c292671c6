#!/bin/bash
# Run through the device tool: `bash benchmarks/deploy_gpu.sh` with the serving wheels carried in
# .whl (fastapi, starlette, pydantic, uvicorn and the others the GPU image lacks); results
# under $OUT, summarized by benchmarks/deploy_load.py.
# On the H200: a ResNet-50 defect model served by CUDA replicas. (1) one replica's service profile
# and cold start; (2) abyssal deploy up with three CUDA tiers on the one GPU: a load with half the
# requests sensitive, the status and the GPU's own utilization; every private replica killed.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src ABYSSAL_HOME=/tmp/h OMP_NUM_THREADS=4
W=/tmp/w; mkdir -p $W
python3 - > $OUT/env.txt <<'PY' || exit 1
import torch, platform, fastapi, uvicorn, httpx
print(platform.platform(), torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0),
      fastapi.__version__, uvicorn.__version__, httpx.__version__)
PY
python3 -m abyssal generate defect --out $W/defect images_per_class=40 size=128 > $W/prepare.log 2>&1
python3 -m abyssal train defect --config configs/defect/quickstart.yaml data.path=$W/defect/images \
  data.image_size=128 model.backbone=resnet50 train.epochs=1 train.max_steps=15 train.progress=false \
  train.device=cuda >> $W/prepare.log 2>&1 || { tail -30 $W/prepare.log; exit 1; }
img=$(ls $W/defect/images/scratch/*.png | head -1)
echo "{\"path\": \"$img\"}" > $W/body.json
# (1) one replica
t0=$(date +%s.%N)
python3 -m abyssal serve defect --device cuda --allow-paths --port 8201 --max-batch-size 32 > $W/replica.log 2>&1 &
RP=$!
for i in $(seq 1 1800); do curl -sf localhost:8201/readyz > /dev/null && break; kill -0 $RP || { tail -20 $W/replica.log; exit 1; }; sleep 0.1; done
t1=$(date +%s.%N); python3 -c "print(\"cold_start_s\", round($t1 - $t0, 2))" | tee $OUT/cold_start.txt
python3 -m abyssal deploy measure http://127.0.0.1:8201 defect --body $W/body.json --seconds 15 \
  --concurrency 32 --out $OUT/profile_h200_defect.json 2>&1 
kill $RP; wait $RP
# (2) local mode on the GPU
cat > $W/gpu.yaml <<YAML
name: defect-gpu
tiers:
  - {name: edge, kind: edge, models: [defect], device: cuda, replicas: {min: 1, max: 1}, max_inflight: 8,
     price_per_hour: 1.0, serve_args: [--allow-paths, --max-batch-size, "32"]}
  - {name: private, kind: private, models: [defect], device: cuda, replicas: {min: 1, max: 2}, max_inflight: 16,
     price_per_hour: 3.0, serve_args: [--allow-paths, --max-batch-size, "32"]}
  - {name: public, kind: public, models: [defect], device: cuda, replicas: {min: 0, max: 2}, max_inflight: 16,
     price_per_hour: 6.0, serve_args: [--allow-paths, --max-batch-size, "32"]}
policies: {objective_p99_ms: 500, wait_s: 5, health: {every_s: 0.5}}
autoscale: {every_s: 2, out_after: 1, in_after: 3, cooldown_s: 6}
local: {port: 8300, restart_s: 600}
YAML
python3 -m abyssal deploy up $W/gpu.yaml > $W/up.log 2>&1 &
UP=$!
for i in $(seq 1 600); do
  n=$(curl -sf localhost:8300/v1/deploy/status | python3 -c "import json,sys; s=json.load(sys.stdin); print(sum(r['state']=='ready' for t in s['tiers'] for r in t['replicas']))" 2>/dev/null)
  [ "$n" = "2" ] && break; kill -0 $UP || { tail -20 $W/up.log; exit 1; }; sleep 0.2
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -lms 500 > $OUT/gpu_util.csv &
SMI=$!
python3 benchmarks/deploy_load.py http://127.0.0.1:8300 $W/body.json --out $OUT > $W/drive.log 2>&1
kill $SMI
python3 -m abyssal deploy status defect-gpu > $W/status_end.txt 2>&1
python3 -m abyssal deploy down defect-gpu >> $W/status_end.txt 2>&1
wait $UP; echo "up rc $?" >> $W/status_end.txt
cp /tmp/h/deployments/defect-gpu/events.jsonl $OUT/ 2>/dev/null
python3 benchmarks/deploy_load.py --summarize $OUT --out $OUT
tail -5 $W/drive.log; cat $W/status_end.txt | head -30
