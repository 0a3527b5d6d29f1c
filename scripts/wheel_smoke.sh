#!/usr/bin/env bash
# Build the wheel and use it as a user would, outside the checkout: a fresh virtual environment
# with the wheel installed (no editable install, no access to the source tree), a smoke of the
# command line, a randomized environment, a collection and a short training run.
# Dependencies come from the project's .venv (its site-packages on the path, without its .pth
# files, so the editable embodied_rl there is not importable): nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$(pwd)/$VENV/bin/python"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# setuptools builds in ./build: remove it afterwards unless it was there before
[ -e build ] && KEEP_BUILD=1 || KEEP_BUILD=0
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" .
[ "$KEEP_BUILD" = 1 ] || rm -rf build
WHEEL="$(ls "$WORK"/dist/embodied_rl-*.whl)"
"$PY" -m venv "$WORK/venv"  # its own pip (ensurepip, offline): scripts get its python
DEPS="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$WORK/venv/bin/python" -m pip install -q --no-deps --no-index "$WHEEL"
echo "$DEPS" > "$SITE/project-dependencies.pth"  # a plain path: its .pth files are not run

cd "$WORK"  # nothing of the checkout on sys.path
export PATH="$WORK/venv/bin:$PATH" MUJOCO_GL="${MUJOCO_GL:-egl}"
python - <<'EOF'
import embodied_rl, os
where = os.path.dirname(embodied_rl.__file__)
assert "/venv/" in where and "site-packages" in where, f"embodied_rl imported from {where}"
from embodied_rl.envs import make
env = make("tabletop/reach-v0", randomization="light", seed=0)
env.reset(seed=0)
env.close()
print("wheel import:", where)
EOF
erl --version
erl tasks > /dev/null
erl pipeline --help > /dev/null
erl collect --task tabletop/reach-v0 --tier expert --episodes 3 --out data --name smoke/reach-expert-v0 --no-progress
erl train --algo bc --dataset data/smoke/reach-expert-v0 --steps 20 --eval-episodes 2 --out run > /dev/null
test -f run/policy/model.safetensors
# the README's walk-through with an image policy, one artifact along, at tiny sizes
erl collect --task tabletop/reach-v0 --episodes 2 --obs-mode rgb+state --image-size 32 --horizon 10 \
    --out data --name smoke/reach-rgb-v0 --no-progress
erl train --algo bc --policy vla --dataset data/smoke/reach-rgb-v0 --steps 4 --batch-size 4 \
    --eval-episodes 0 --out outputs/bc policy.n_layers=1 > /dev/null
erl evaluate --policy outputs/bc --task tabletop/reach-v0 --episodes 1 > /dev/null
erl transfer --policy outputs/bc --task tabletop/reach-v0 --targets heavy --episodes 1 \
    --out outputs/transfer > /dev/null
erl finetune ppo --pretrained outputs/bc --out outputs/ppo env_steps=64 n_envs=1 eval_episodes=1 \
    ppo.n_steps=32 ppo.batch_size=16 > /dev/null
test -f outputs/ppo/result.json
# the LLM side: a tiny SFT run and a DPO step from it, with the packaged configs
erl llm sft --n-examples 64 --n-eval 2 --no-progress steps=2 batch_size=8 > /dev/null
erl llm dpo --model outputs/llm/sft/model --n-examples 16 --n-eval 2 --no-progress steps=1 batch_size=4 > /dev/null
test -f outputs/llm/dpo/model/model.safetensors
echo "wheel smoke passed: $(basename "$WHEEL")"
