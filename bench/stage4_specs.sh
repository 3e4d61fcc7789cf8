# The volumes stage 4 of the shipped model trained on (sourced by bench/train_default.sh and
# bench/bench_train_precision.sh). One spec per volume: "preset seed anisotropy z y x [--randomize]".

# volume_dir ROOT preset seed anisotropy z y x [--randomize [NAME]]: the volume's folder,
# ROOT/<preset>-<seed>-a<anisotropy>[-r[-NAME]]
volume_dir() { printf '%s' "$1/$2-$3-a$4${8:+-r}${9:+-$9}"; }

# stage4_randomized [SEED_OFFSET [RANDOMIZATION]]: the 22 volumes with randomized optics, seeds 1010 + SEED_OFFSET
# on; RANDOMIZATION (`mediar3d synth --randomize NAME`) is "standard" when not given
stage4_randomized() {
  local round=${1:-0} r="--randomize${2:+ $2}" i a z
  i=0; for a in 2 3 4 4 5 6 8 8; do echo "zebrafish $((1010 + round + i)) $a 32 256 256 $r"; i=$((i + 1)); done
  i=0; for a in 4 6 8 10; do echo "celegans $((1010 + round + i)) $a 16 256 256 $r"; i=$((i + 1)); done
  i=0; for a in 1 2 2 3 4 2; do echo "sparse $((1010 + round + i)) $a 24 128 128 $r"; i=$((i + 1)); done
  i=0; for z in 5 6 6 8; do echo "thin $((1010 + round + i)) 5 $z 256 256 $r"; i=$((i + 1)); done
}
# the 4 volumes with the presets' own optics, after the randomized ones
STAGE4_PLAIN=("zebrafish 1020 4 32 256 256" "celegans 1020 10 16 256 256" "sparse 1020 2 24 128 128" "thin 1020 5 6 256 256")
# the validation volumes (--val-data) of stages 4-6
STAGE4_VAL=("zebrafish 1900 4 32 256 256" "thin 1900 5 6 256 256" "sparse 1900 2 24 128 128")
