#!/usr/bin/env bash
# The API's latency over a database that has served a research group for a while: RUNS
# finished runs (default 1,000) of 300 epochs, each with 100 epoch checkpoints, 50 of them
# analysed (40 records each), 300 log lines of training and 4 per analysis, and the metrics
# of every epoch — copied in SQL from one run submitted through the API, so that every
# stored spec is one the API wrote. Then curl times each request REPEATS times (default 30)
# and prints the median and the slowest: the run list (as the dashboard's home page polls
# it), one run, its analyses, one analysis, the Prometheus scrape, and deleting a run.
# With QUICK_OUT (the output directory of `scripts/quick-run`), the timed run's 50 analyses
# carry the quick ResNet-20's records of epoch 6 (what its page draws), and the quick
# experiment is added over SEEDS seeds (default 10), each run with its quick model's metrics
# and its four analyses' records, and its pages timed.
#   bench/db-scale.sh [RUNS] [REPEATS]   (needs jq, curl, psql, python3; API_BIN, default a
#   release stepwise-api, built if missing: name another build to compare; with QUICK_OUT a
#   release stepwise for the submission)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000}
repeats=${2:-30}
source bench/api-stack.sh 18182

template=$(curl -sf -X POST "$API/v1/runs" -H 'Content-Type: application/json' -d '{"spec":
  {"model": {"arch": "resnet", "depth": 20}, "data": {"dataset": "cifar10"}, "train": {"epochs": 300}},
  "analysis": {"checkpoints": {"every": 2}}}' | jq -r .id)
psql "$url" -q -v ON_ERROR_STOP=1 -v template="$template" -v runs="$runs" <<'SQL'
CREATE TEMP TABLE made AS
  SELECT gen_random_uuid() AS id, now() - (n || ' minutes')::interval AS at
    FROM generate_series(1, :runs) n;
INSERT INTO runs (id, label, name, tags, arch, dataset, spec, resolved_spec, analysis_plan,
                  status, epochs, epochs_done, step, total_steps, created_at, updated_at)
  SELECT m.id, t.label, t.name, t.tags, t.arch, t.dataset, t.spec, t.spec, t.analysis_plan,
         'succeeded', 300, 300, 117300, 117300, m.at, m.at
    FROM made m, runs t WHERE t.id = :'template';
INSERT INTO jobs (id, kind, run_id, state, attempt, max_attempts, created_at)
  SELECT gen_random_uuid(), 'train', id, 'succeeded', 1, 3, at FROM made;
INSERT INTO checkpoints (id, run_id, attempt, directory, file_name, epoch, batch, step, sha256, size)
  SELECT gen_random_uuid(), m.id, 1, 'runs/' || m.id || '/attempt-1',
         format('epoch-%s.safetensors', lpad(e::text, 4, '0')), e, 0, e * 391, repeat('0', 64), 1100000
    FROM made m, generate_series(3, 300, 3) e;
INSERT INTO analyses (id, run_id, checkpoint_id, epoch, spec, status, selected_alpha, notes,
                      examples, seconds, finished_at)
  SELECT gen_random_uuid(), c.run_id, c.id, c.epoch, t.analysis_plan -> 'spec', 'succeeded',
         0.1, '[]', '[{"split": "test", "examples": 2000}]', 60, now()
    FROM checkpoints c, runs t WHERE t.id = :'template' AND c.epoch % 2 = 0;
INSERT INTO jobs (id, kind, run_id, analysis_id, state, attempt, max_attempts)
  SELECT gen_random_uuid(), 'analyze', run_id, id, 'succeeded', 1, 3 FROM analyses;
INSERT INTO attempts (job_id, attempt, worker, ended_at, outcome)
  SELECT id, 1, 'worker-1', now(), 'succeeded' FROM jobs WHERE state = 'succeeded';
INSERT INTO logs (run_id, job_id, attempt, level, message)
  SELECT j.run_id, j.id, 1, 'info', format('epoch %s: train loss 0.1234, test loss 0.3456, test accuracy 0.9123', e)
    FROM jobs j, generate_series(1, 300) e WHERE j.kind = 'train' AND j.state = 'succeeded';
INSERT INTO logs (run_id, job_id, attempt, level, message)
  SELECT j.run_id, j.id, 1, 'info', 'analyze job claimed by worker-1'
    FROM jobs j, generate_series(1, 4) WHERE j.kind = 'analyze';
INSERT INTO analysis_records (analysis_id, seq, record)
  SELECT a.id, s, jsonb_build_object('name', 'cosine', 'split', 'test', 'epoch', a.epoch,
         'block', format('s%s.b%s', s / 14, s % 14), 'block_index', s, 'kind', 'identity',
         'stat', 'mean', 'value', -0.1, 'n', 2000)
    FROM analyses a, generate_series(0, 39) s;
INSERT INTO metrics (run_id, name, split, epoch, value)
  SELECT m.id, n, s, e, 0.5 + e / 1000.0
    FROM made m, unnest(array['loss', 'accuracy']) n, unnest(array['train', 'test']) s,
         generate_series(1, 300) e;
VACUUM ANALYZE runs, jobs, checkpoints, analyses, attempts, logs, analysis_records, metrics;
SQL
count() { psql "$url" -tAc "SELECT count(*) FROM $1"; }
echo "$(count runs) runs, $(count jobs) jobs, $(count analyses) analyses, $(count logs) log lines," \
  "$(count analysis_records) analysis records, $(count metrics) metric rows; $(nproc) cores; $api_bin"

run=$(psql "$url" -tAc "SELECT id FROM runs WHERE id <> '$template' ORDER BY created_at DESC LIMIT 1")
analysis=$(psql "$url" -tAc "SELECT id FROM analyses WHERE run_id = '$run' ORDER BY epoch DESC LIMIT 1")
if [ -n "${QUICK_OUT:-}" ]; then
  [ -x target/release/stepwise ] || cargo build --release -p cli
  seeds=${SEEDS:-10}
  sed "s/^seeds = \[0\]/seeds = [$(seq -s, 0 $((seeds - 1)))]/" experiments/quick/quick.toml >"$work/quick.toml"
  experiment=$(target/release/stepwise submit "$work/quick.toml" --api-url "$API" --json | jq -r .id)
  # Each quick model's records and metrics, a line each as COPY's text format reads it (its
  # backslashes doubled), keyed by the model's label.
  python3 - "$QUICK_OUT/runs" "$work" <<'PY'
import json, os, sys
runs, work = sys.argv[1:]
def line(*fields):
    return "\t".join("\\N" if f is None else str(f).replace("\\", "\\\\") for f in fields) + "\n"
with open(f"{work}/records.tsv", "w") as records, open(f"{work}/metrics.tsv", "w") as metrics:
    for run in sorted(os.listdir(runs)):
        label = run.rsplit("-seed", 1)[0]
        for m in map(json.loads, open(f"{runs}/{run}/metrics.jsonl")):
            if m.get("value") is not None:
                metrics.write(line(label, m["name"], m.get("split") or "", m["epoch"],
                                   m.get("block") or "", m.get("block_index"), m["value"]))
        for epoch in sorted(os.listdir(f"{runs}/{run}/analysis")):
            analysis = json.load(open(f"{runs}/{run}/analysis/{epoch}/analysis.json"))
            for seq, r in enumerate(analysis["records"]):
                records.write(line(label, analysis["epoch"], seq, json.dumps(r)))
PY
  psql "$url" -q -v ON_ERROR_STOP=1 -v run="$run" -v experiment="$experiment" <<SQL
CREATE TEMP TABLE given (label text, epoch integer, seq integer, record jsonb);
\copy given FROM '$work/records.tsv'
CREATE TEMP TABLE trained (label text, name text, split text, epoch integer, block text,
                           block_index integer, value float8);
\copy trained FROM '$work/metrics.tsv'
-- The timed run: the ResNet-20's records of its last analysed epoch at each of its epochs.
DELETE FROM analysis_records WHERE analysis_id IN (SELECT id FROM analyses WHERE run_id = :'run');
INSERT INTO analysis_records (analysis_id, seq, record)
  SELECT a.id, g.seq, g.record || jsonb_build_object('epoch', a.epoch)
    FROM analyses a, given g
   WHERE a.run_id = :'run' AND g.label = 'resnet-20'
     AND g.epoch = (SELECT max(epoch) FROM given WHERE label = 'resnet-20');
-- The experiment: every run trained and analysed as its quick model was.
UPDATE runs SET status = 'succeeded', epochs_done = epochs, resolved_spec = spec
 WHERE experiment_id = :'experiment';
UPDATE jobs SET state = 'succeeded', attempt = 1
 WHERE run_id IN (SELECT id FROM runs WHERE experiment_id = :'experiment');
INSERT INTO metrics (run_id, name, split, epoch, block, block_index, value)
  SELECT r.id, t.name, t.split, t.epoch, t.block, t.block_index, t.value
    FROM runs r JOIN trained t ON t.label = r.label WHERE r.experiment_id = :'experiment';
INSERT INTO checkpoints (id, run_id, attempt, directory, file_name, epoch, batch, step, sha256, size)
  SELECT DISTINCT ON (r.id, g.epoch) gen_random_uuid(), r.id, 1, 'runs/' || r.id || '/attempt-1',
         format('epoch-%s.safetensors', lpad(g.epoch::text, 4, '0')), g.epoch, 0, g.epoch * 79,
         repeat('0', 64), 300000
    FROM runs r JOIN given g ON g.label = r.label WHERE r.experiment_id = :'experiment';
INSERT INTO analyses (id, run_id, checkpoint_id, epoch, spec, status, selected_alpha, notes,
                      examples, seconds, finished_at)
  SELECT gen_random_uuid(), c.run_id, c.id, c.epoch, r.analysis_plan -> 'spec', 'succeeded',
         0.1, '[]', '[{"split": "test", "examples": 500}]', 7, now()
    FROM checkpoints c JOIN runs r ON r.id = c.run_id WHERE r.experiment_id = :'experiment';
INSERT INTO jobs (id, kind, run_id, analysis_id, state, attempt, max_attempts)
  SELECT gen_random_uuid(), 'analyze', a.run_id, a.id, 'succeeded', 1, 3
    FROM analyses a JOIN runs r ON r.id = a.run_id WHERE r.experiment_id = :'experiment';
INSERT INTO analysis_records (analysis_id, seq, record)
  SELECT a.id, g.seq, g.record
    FROM analyses a JOIN runs r ON r.id = a.run_id JOIN given g ON g.label = r.label AND g.epoch = a.epoch
   WHERE r.experiment_id = :'experiment';
VACUUM ANALYZE runs, jobs, checkpoints, analyses, analysis_records, metrics;
SQL
  echo "with $QUICK_OUT: the timed run's analyses the quick ResNet-20's records; the quick" \
    "experiment over $seeds seeds: $(psql "$url" -tAc "SELECT count(*) FROM analysis_records r
      JOIN analyses a ON a.id = r.analysis_id JOIN runs u ON u.id = a.run_id
     WHERE u.experiment_id = '$experiment'") analysis records"
fi
# "LABEL median …, slowest … ms, … bytes" of the lines "HTTP_CODE SECONDS BYTES" on stdin.
summary() {
  sort -k2 -g | awk -v label="$1" '
    $1 !~ /^2/ { bad++ } { t[NR] = $2 * 1000; if ($3 > size) size = $3 }
    END { printf "%-40s median %8.2f ms, slowest %8.2f ms, %9d bytes%s\n", label,
          t[int((NR + 1) / 2)], t[NR], size, bad ? " (" bad " not 2xx)" : "" }'
}
# `repeats` requests of one kind.
timed() {
  local label=$1 method=$2 path=$3
  for _ in $(seq 1 "$repeats"); do
    curl -s -o /dev/null -X "$method" -w '%{http_code} %{time_total} %{size_download}\n' "$API$path"
  done | summary "$label"
}
timed "GET /v1/runs?limit=50" GET "/v1/runs?limit=50"
timed "GET /v1/runs?status=succeeded&limit=50" GET "/v1/runs?status=succeeded&limit=50"
timed "GET /partials/runs (the home page)" GET "/partials/runs"
timed "GET /v1/runs/{id}" GET "/v1/runs/$run"
timed "GET /v1/runs/{id}/analyses" GET "/v1/runs/$run/analyses"
timed "GET /v1/analyses/{id}" GET "/v1/analyses/$analysis"
timed "GET /metrics (Prometheus)" GET "/metrics"
timed "GET /runs/{id} (its page)" GET "/runs/$run"
timed "GET /partials/runs/{id} (its live part)" GET "/partials/runs/$run"
timed "GET /v1/runs/{id}/figures" GET "/v1/runs/$run/figures"
timed "GET /v1/runs/{id}/logs" GET "/v1/runs/$run/logs"
if [ -n "${QUICK_OUT:-}" ]; then
  timed "GET /experiments/{id} (its page)" GET "/experiments/$experiment"
  timed "GET /v1/experiments/{id}/claims" GET "/v1/experiments/$experiment/claims"
  timed "GET /v1/experiments/{id}/figures/fig2…svg" GET "/v1/experiments/$experiment/figures/fig2_cosine.svg"
fi
# Deleting: a different run each time, the oldest first.
for id in $(psql "$url" -tAc "SELECT id FROM runs WHERE id <> '$template' ORDER BY created_at LIMIT $repeats"); do
  curl -s -o /dev/null -X DELETE -w '%{http_code} %{time_total} %{size_download}\n' "$API/v1/runs/$id"
done | summary "DELETE /v1/runs/{id}"
