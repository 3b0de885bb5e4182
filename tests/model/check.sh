#!/usr/bin/env bash
# Model-checks the lane ring protocol (tests/model/ring.pml) with spin: every check must report
# `errors: 0` over its whole state space, and every mutant (a model with one known bug put back) must
# report errors. See README.md. Usage: check.sh [-k] [NAME...]   (-k: keep the temp dir; NAMEs: run
# only those checks/mutants). Environment: SPIN (default spin), CC (default gcc), MEMLIM (MB, 1024),
# RUN_TIMEOUT (seconds per pan run, 120).
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model="$here/ring.pml"
SPIN="${SPIN:-spin}"
CC="${CC:-gcc}"
MEMLIM="${MEMLIM:-1024}"
RUN_TIMEOUT="${RUN_TIMEOUT:-120}"

keep=0
if [ "${1:-}" = "-k" ]; then keep=1; shift; fi
only=" $* "

for tool in "$SPIN" "$CC" timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check.sh: '$tool' not found. Install it (Debian: apt-get install -y spin gcc coreutils)." >&2
        exit 2
    fi
done
[ -f "$model" ] || { echo "check.sh: $model not found" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/rvoip-model.XXXXXX")" || exit 2
if [ "$keep" = 1 ]; then echo "check.sh: keeping $work"; else trap 'rm -rf "$work"' EXIT; fi

passed=0
failed=0

# run KIND NAME MODE FLAGS...
#   KIND  check (must report errors: 0 over a complete search) | mutant (must report errors > 0)
#   MODE  safety (assertions + invalid end states, -DSAFETY) | acyclic (any cycle, -DNP, pan -l)
run() {
    local kind=$1 name=$2 mode=$3
    shift 3
    case "$only" in "  ") ;; *" $name "*) ;; *) return ;; esac
    local dir="$work/$name"
    mkdir -p "$dir" && cp "$model" "$dir/ring.pml" || { finish "$kind" "$name" FAIL "cannot set up $dir"; return; }
    local cflags="-O1 -w -DMEMLIM=$MEMLIM -DCOLLAPSE" panflags="-m100000"
    if [ "$mode" = acyclic ]; then cflags="$cflags -DNP"; panflags="$panflags -l"; else cflags="$cflags -DSAFETY"; fi
    if ! (cd "$dir" && "$SPIN" "$@" -a ring.pml >spin.log 2>&1); then
        finish "$kind" "$name" FAIL "spin -a failed: $(grep -m1 -i error "$dir/spin.log")"
        return
    fi
    # shellcheck disable=SC2086
    if ! (cd "$dir" && "$CC" $cflags -o pan pan.c >cc.log 2>&1); then
        finish "$kind" "$name" FAIL "$CC failed: $(head -c 200 "$dir/cc.log")"
        return
    fi
    local t0 t1 rc
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    (cd "$dir" && timeout "$RUN_TIMEOUT" ./pan $panflags >pan.log 2>&1)
    rc=$?
    t1=$(date +%s.%N)
    local secs errors states why="" complete=1
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1fs", b - a }')
    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$dir/pan.log" | head -1)
    states=$(awk '/states, stored/ { print $1; exit }' "$dir/pan.log")
    [ "$rc" = 124 ] && { complete=0; why="timed out after ${RUN_TIMEOUT}s"; }
    [ -n "$errors" ] || { errors="?"; complete=0; [ -n "$why" ] || why="pan printed no result (rc $rc)"; }
    # pan also says "Search not completed" when it stops at the first error: only a clean run must be whole
    if [ "$errors" = 0 ] && grep -q -e 'Search not completed' -e 'reached -DMEMLIM' -e 'max search depth too small' "$dir/pan.log"; then
        complete=0; why="search incomplete (memory or depth limit: raise MEMLIM or shrink the model)"
    fi
    local stats="errors: $errors, states: ${states:-?}, $secs"
    local what=""
    if [ "$errors" != "?" ] && [ "$errors" -gt 0 ]; then what=$(violation "$dir" "$mode" "$@"); fi
    if [ "$kind" = check ]; then
        if [ "$complete" = 1 ] && [ "$errors" = 0 ]; then
            finish check "$name" PASS "$stats"
        else
            finish check "$name" FAIL "$stats${what:+; $what}${why:+; $why}"
        fi
    else
        if [ "$errors" != "?" ] && [ "$errors" -gt 0 ]; then
            finish mutant "$name" PASS "$stats; caught: $what"
        else
            finish mutant "$name" FAIL "$stats; the mutant SURVIVED${why:+ ($why)}"
        fi
    fi
}

# What the first error was: the @tag of the failed assertion (from the source line of the trail), an
# invalid end state (a deadlock outside the end labels), or a cycle.
violation() {
    local dir=$1 mode=$2
    shift 2
    if [ "$mode" = acyclic ]; then echo "a cycle (non-progress)"; return; fi
    if grep -q 'invalid end state' "$dir/pan.log" && ! grep -q 'assertion violated' "$dir/pan.log"; then
        echo "invalid end state (deadlock)"; return
    fi
    local line tag
    line=$(cd "$dir" && "$SPIN" "$@" -t ring.pml 2>&1 | sed -n 's/.*ring\.pml:\([0-9][0-9]*\), Error: assertion violated.*/\1/p' | head -1)
    tag=""
    [ -n "$line" ] && tag=$(sed -n "${line}p" "$dir/ring.pml" | grep -o '@[A-Za-z0-9_-]*' | head -1)
    echo "assertion ${tag:-at ring.pml:${line:-?}}"
}

finish() {
    local kind=$1 name=$2 result=$3 detail=$4
    printf '%-4s  %-6s  %-26s  %s\n' "$result" "$kind" "$name" "$detail"
    if [ "$result" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

echo "spin model checks of $model"

# The protocol: every check explores its whole state space (see README for what each covers).
run check basic           safety  -DCFG_BASIC         # properties 1, 2, 4 (and a short loan's give-back)
run check join            safety  -DCFG_JOIN          # properties 1, 2, 5 (and the join bit vs give-back)
run check pub_death       safety  -DCFG_PUBDEATH      # properties 1, 2, 3, 4 with a publisher death
run check giveback_death  safety  -DCFG_GIVEBACK_DEATH  # the same, with a short commit's give-back
run check sub_death       safety  -DCFG_SUBDEATH      # properties 1, 2, 3, 4 with a subscriber death
run check multislot_death safety  -DCFG_MULTISLOT     # properties 1, 2, 3: one process, two publisher slots
run check pub_death_spec_gate safety -DCFG_PUBDEATH -DSPEC_GATE_NO_INTENTS  # the brief's gate suffices
                                                      # without joins: spec_leave_alone fails for its own rule
run check evict           safety  -DCFG_EVICT -DEVICT_ONEPUB  # eviction: exactness, no stall, order, and
                                                      # nothing handed out that its cursor did not protect
run check acyclic_basic   acyclic -DCFG_BASIC         # no cycles: the final-state checks see every run
run check acyclic_join    acyclic -DCFG_JOIN
run check join_long       safety  -DCFG_JOIN -DJOIN_LONG  # a short commit's give-back inside a join, then a lap
# Exclusive lanes: one publisher, plain-store claims, its stores through an x86-TSO store buffer; the
# parking subscriber's membarrier drains it (see README).
run check exclusive               safety  -DCFG_EXCLUSIVE                # properties 1, 2, 4, 5: the joiner only
run check exclusive_two           safety  -DCFG_EXCLUSIVE -DEXCL_TWO     # and a subscriber from the start
run check exclusive_fenced        safety  -DCFG_EXCLUSIVE -DEXCL_FENCED -DEXCL_TWO  # no membarrier: notify fences
run check exclusive_death         safety  -DCFG_EXCLUSIVE_DEATH          # properties 1-4: death with stores buffered
run check exclusive_death_join    safety  -DCFG_EXCLUSIVE_DEATH -DEXCL_JOINS  # the same, the subscriber joins
run check exclusive_loan          safety  -DCFG_EXCLUSIVE -DEXCL_LOAN    # a loan committed short first (the join's give-back case)
run check exclusive_loan_two      safety  -DCFG_EXCLUSIVE -DEXCL_LOAN -DEXCL_TWO
run check acyclic_exclusive       acyclic -DCFG_EXCLUSIVE
run check acyclic_exclusive_death acyclic -DCFG_EXCLUSIVE_DEATH

# Mutants: each puts back one bug; each must be caught.
run mutant no_gate                 safety  -DCFG_BASIC    -DMUT_NO_GATE
run mutant park_no_recheck         safety  -DCFG_BASIC    -DMUT_PARK_NO_RECHECK
run mutant no_nap                  safety  -DCFG_BASIC    -DMUT_NO_NAP
run mutant loose_marker            safety  -DCFG_BASIC    -DMUT_LOOSE_MARKER
run mutant polling_nap             acyclic -DCFG_BASIC    -DMUT_POLLING_NAP
run mutant join_no_reread          safety  -DCFG_JOIN     -DMUT_JOIN_NO_REREAD
run mutant join_no_bit             safety  -DCFG_JOIN     -DMUT_JOIN_NO_BIT
run mutant join_plain_first        safety  -DCFG_JOIN     -DJOIN_LONG -DMUT_JOIN_PLAIN_FIRST  # the join the model found wanting
run mutant excl_join_plain_first   safety  -DCFG_EXCLUSIVE -DEXCL_LOAN -DMUT_JOIN_PLAIN_FIRST
run mutant excl_no_membarrier      safety  -DCFG_EXCLUSIVE -DMUT_EXCL_NO_MEMBARRIER
run mutant excl_membarrier_first   safety  -DCFG_EXCLUSIVE -DMUT_EXCL_MEMBARRIER_FIRST
run mutant excl_no_gate_fence      safety  -DCFG_EXCLUSIVE -DMUT_EXCL_NO_GATE_FENCE
run mutant no_shrink_to            safety  -DCFG_GIVEBACK_DEATH -DMUT_NO_SHRINK_TO
run mutant won_unbounded           safety  -DCFG_GIVEBACK_DEATH -DMUT_WON_UNBOUNDED
run mutant recovery_no_scan        safety  -DCFG_PUBDEATH -DMUT_RECOVERY_NO_SCAN
run mutant hop_limit               safety  -DCFG_PUBDEATH -DMUT_HOP_LIMIT
run mutant full_keeps_intent       safety  -DCFG_PUBDEATH -DMUT_FULL_KEEPS_INTENT
run mutant leave_keeps_slot        safety  -DCFG_SUBDEATH -DMUT_LEAVE_KEEPS_SLOT
run mutant evict_plain_store       safety  -DCFG_EVICT -DEVICT_ONEPUB -DEVICT_UNPROTECTED_OK -DMUT_EVICT_PLAIN_STORE
run mutant evict_no_undo           safety  -DCFG_EVICT -DEVICT_ONEPUB -DEVICT_UNPROTECTED_OK -DMUT_EVICT_NO_UNDO
run mutant evict_no_subtract       safety  -DCFG_EVICT -DEVICT_ONEPUB -DEVICT_UNPROTECTED_OK -DMUT_EVICT_NO_SUBTRACT
run mutant evict_past_uncommitted  safety  -DCFG_EVICT -DEVICT_ONEPUB -DEVICT_UNPROTECTED_OK -DMUT_EVICT_PAST_UNCOMMITTED
run mutant evict_no_seqlock        safety  -DCFG_EVICT -DEVICT_ONEPUB -DEVICT_UNPROTECTED_OK -DMUT_EVICT_NO_SEQLOCK
# try_next without its re-check of `evictions` after the peek (the code before the model found it):
# a record from the range the broker skipped is handed out, unprotected, and can be torn.
run mutant evict_no_recheck        safety  -DCFG_EVICT -DEVICT_ONEPUB -DMUT_EVICT_NO_RECHECK
run mutant evict_no_recheck_torn   safety  -DCFG_EVICT_DEATH -DEVICT_UNPROTECTED_OK -DMUT_EVICT_NO_RECHECK
# The protocol as first specified (brief of the ring redesign): each of these is a real bug.
run mutant spec_gate_no_intents    safety  -DCFG_JOIN     -DSPEC_GATE_NO_INTENTS
run mutant spec_no_release_empty   safety  -DCFG_PUBDEATH -DSPEC_NO_RELEASE_ON_EMPTY
run mutant spec_no_tail_check      safety  -DCFG_PUBDEATH -DSPEC_NO_TAIL_CHECK
run mutant spec_no_ring            safety  -DCFG_PUBDEATH -DSPEC_NO_RING
run mutant spec_won                safety  -DCFG_MULTISLOT -DSPEC_WON
run mutant spec_leave_alone        safety  -DCFG_PUBDEATH -DSPEC_LEAVE_ALONE -DSPEC_GATE_NO_INTENTS

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
