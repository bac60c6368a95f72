#!/bin/bash
# The study's queue, most informative cells first; each command skips finished runs, so the
# queue can be started again after any stop. Two lanes of one job each use the 2 cores best:
#   benchmarks/study-queue.sh core &  benchmarks/study-queue.sh strong &
# Run from the checkout root; results land in benchmarks/results/<dataset>/ and are committed. A run
# both lanes plan is claimed by the first to start it (claimed.pid in its work folder); the other skips it.
set -u
S="python -m recbole_rsir.study --threads=1 --commit --rounds=3 --jobs=1"
case "${1:-core}" in
core)     # SASRec's default base on both datasets: RSIR against augmentation, weak-to-strong and no fidelity
          # (the paper's collapse is on Sports, so its seed 2020 comes second) and fine-tuning, three seeds;
          # CL4SRec and HSTU on Beauty; then the tau x p sweep, then the variants beside the strong lane
    $S --dataset=amazon-beauty --seeds=2020 --arms=rsir,aug,nofid
    $S --dataset=amazon-beauty --seeds=2020 --arms=rsir,ft     # needs weights: one sitting, so early in one
    $S --dataset=amazon-sports-outdoors --seeds=2020 --arms=rsir,aug,nofid
    $S --dataset=amazon-beauty --seeds=2020,2021,2022 --arms=rsir,aug,w2s
    $S --dataset=amazon-beauty --models=CL4SRec,HSTU --seeds=2020,2021 --arms=rsir
    $S --dataset=amazon-sports-outdoors --seeds=2020,2021,2022 --arms=rsir,aug,w2s
    $S --dataset=amazon-beauty,amazon-sports-outdoors --seeds=2020,2021,2022 --arms=rsir,nofid,ft
    $S --dataset=amazon-beauty --seeds=2020 --arms=sweep
    $S --dataset=amazon-beauty --seeds=2020,2021,2022 --arms=rsir,strong,refine,judge,tau ;;
strong)   # the strong base with RSIR on top, then CL4SRec and HSTU on Beauty (the README's table
          # needs them), the strong base on Sports, then the sweep beside the core lane, then the
          # variants beyond the paper (issue 20): the evidence issue's cells come first in both
          # lanes (a run both lanes plan goes to the first that starts it)
    $S --dataset=amazon-beauty --seeds=2020,2021,2022 --arms=rsir,strong
    $S --dataset=amazon-beauty --models=CL4SRec,HSTU --seeds=2020,2021 --arms=rsir
    $S --dataset=amazon-beauty --seeds=2020 --arms=rsir,judge
    $S --dataset=amazon-sports-outdoors --seeds=2020,2021,2022 --arms=rsir,strong
    $S --dataset=amazon-beauty --seeds=2020 --arms=sweep
    $S --dataset=amazon-beauty --seeds=2020,2021,2022 --arms=rsir,strong,refine,judge,tau ;;
*) echo "usage: $0 core|strong" >&2; exit 2 ;;
esac
