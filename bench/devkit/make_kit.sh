#!/usr/bin/env bash
# Builds the device kit in three parts, each small enough to travel in one call beside the tree
# (a call carries 64 MiB; TVM's wheel alone is ~100 MB). On top of ../shared/device/pack-tvm.sh:
#   - TVM's wheel split in thirds, the other wheels spread so the parts weigh about the same;
#   - setup.sh waiting for all three parts before it installs;
#   - nvidia-cudnn-frontend in .devkit/fe, installed alone (see bench/README.md, "graph API");
#   - .devkit/env.sh, which a work script sources after setup.sh.
#
#   bash bench/devkit/make_kit.sh          # from the project root; writes .devkit/
#   call 1: carry [".devkit/part1", ".devkit/setup.sh"]; bash .devkit/setup.sh
#   call 2: carry [".devkit/part2", ".devkit/setup.sh"]; bash .devkit/setup.sh
#   call 3: carry [".devkit/part3", ".devkit/setup.sh", ".devkit/fe", ".devkit/env.sh"];
#           bash .devkit/setup.sh >/dev/null && source .devkit/env.sh && <the work>
# The calls follow each other at once: the machine goes back after 30 s idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.devkit
# What the farm, the database and the tests import beyond pack-tvm.sh's stack (pure Python, or
# cp312 manylinux wheels; no dependencies are resolved).
EXTRA_WHEELS="pydantic==2.14.3 pydantic-core==2.50.4 pydantic-settings==2.16.3 annotated-types==0.8.0 \
typing-inspection==0.4.5 python-dotenv==1.2.4 alembic==1.20.1 mako==1.4.3 markupsafe==3.0.4 \
platformdirs==4.14.7 typing-extensions==4.16.0 cloudpickle jinja2 pytest pluggy iniconfig" \
  bash ../shared/device/pack-tvm.sh "$KIT" >/dev/null

name=$(cat "$KIT/part1/tvm_wheel_name")
rm -rf "$KIT/part3" && mkdir -p "$KIT/part3"
rm -f "$KIT"/part1/tvmwheel.part* "$KIT"/part2/tvmwheel.part*
split -b 34M -d -a 2 "$KIT/dl/$name" "$KIT/tvmwheel.part"
for i in 1 2 3; do mv "$KIT/tvmwheel.part0$((i - 1))" "$KIT/part$i/"; done

rm -rf "$KIT/fe" && mkdir -p "$KIT/fe"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$KIT/fe" nvidia-cudnn-frontend

# The other files, largest first, each into the lightest call (the third carries fe too).
size() { du -sb "$1" | cut -f1; }
weight() { if [ "$1" = part3 ]; then echo $(($(size "$KIT/part3") + $(size "$KIT/fe"))); else size "$KIT/$1"; fi; }
find "$KIT/part2" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.deb' \) -printf '%s %p\n' \
  | sort -rn | while read -r _ file; do
    lightest=part1
    for p in part2 part3; do
      [ "$(weight $p)" -lt "$(weight $lightest)" ] && lightest=$p
    done
    [ "$lightest" = part2 ] || mv "$file" "$KIT/$lightest/"
  done

sed -e 's/for p in part1 part2; do/for p in part1 part2 part3; do/' \
    -e 's|\[ ! -f "$STAGE/tvmwheel.part01" \]|[ ! -f "$STAGE/tvmwheel.part01" ] \|\| [ ! -f "$STAGE/tvmwheel.part02" ]|' \
    -e 's|cat "$STAGE/tvmwheel.part00" "$STAGE/tvmwheel.part01" >|cat "$STAGE"/tvmwheel.part0[0-2] >|' \
    ../shared/device/setup.sh > "$KIT/setup.sh"
grep -q 'tvmwheel.part02' "$KIT/setup.sh" && grep -q 'part1 part2 part3' "$KIT/setup.sh" \
  || { echo "make_kit: ../shared/device/setup.sh changed; update the edits above" >&2; exit 1; }

cat > "$KIT/env.sh" <<'ENV'
# Sourced on the device after setup.sh: TVM's kit, this tree as `tunefarm`, the cuDNN frontend.
export PYTHONPATH=/tmp/devkit/site:$PWD:/tmp/fe-site
mkdir -p tunefarm
for d in tuner tuning_db workers api; do [ -e "tunefarm/$d" ] || ln -s "../$d" "tunefarm/$d"; done
[ -d /tmp/fe-site ] || python3 -m pip install -q --no-deps --target /tmp/fe-site .devkit/fe/*.whl
ENV

for p in part1 part2 part3; do
  echo "make_kit: call ${p#part} carries $(($(weight $p) / 1024 / 1024)) MiB of the kit"
  [ "$(weight $p)" -lt $((48 * 1024 * 1024)) ] || { echo "make_kit: $p is over 48 MiB" >&2; exit 1; }
done
