# Shared by the bench scripts (sourced, not run): the executables' check, pinning the server
# and the load generator to their CPUs, waiting until a tracker serves, and stopping the
# processes a script started (each by its own pid).
# shellcheck shell=bash

# require_exec WHAT PATH: exits with "no WHAT at PATH" unless PATH is an executable.
require_exec() {
    [ -x "$2" ] || { echo "no $1 at $2" >&2; exit 1; }
}

# Sets PIN_SERVER and PIN_LOADGEN, the command prefixes that pin the server to SERVER_CPU and
# the load generator to LOADGEN_CPU (empty without taskset or on a one-CPU host). taskset execs
# the command, so `$!` of a backgrounded "${PIN_SERVER[@]}" command is the server's own pid.
# Expand them as ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} where `set -u` is on and bash is older
# than 4.4.
pin_cpus() {
    PIN_SERVER=()
    PIN_LOADGEN=()
    if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
        PIN_SERVER=(taskset -c "${SERVER_CPU:-1}")
        PIN_LOADGEN=(taskset -c "${LOADGEN_CPU:-0}")
    fi
}

# stop_pids PID...: ends each process (SIGTERM, by its pid) and waits for it; empty and
# already finished pids are skipped.
stop_pids() {
    local pid
    for pid in "$@"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# wait_serving LOG PID [TRIES] [STEP]: waits until the tracker PID, logging to LOG, says
# "ppsp-tracker serving" (TRIES checks STEP seconds apart: 100 x 0.1 s by default). Returns 1,
# after printing the log, when it exits or does not serve in time.
wait_serving() {
    local log=$1 pid=$2 tries=${3:-100} step=${4:-0.1}
    for _ in $(seq "$tries"); do
        grep -q "ppsp-tracker serving" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep "$step"
    done
    grep -q "ppsp-tracker serving" "$log" 2>/dev/null && return 0
    echo "the tracker (pid $pid) did not start:" >&2
    cat "$log" >&2
    return 1
}

# wait_admin ADDR [PID]: waits (at most 10 s) until the admin listener at ADDR (host:port)
# answers /metrics. Returns 1 when it does not, or when PID exits first.
wait_admin() {
    local addr=$1 pid=${2:-}
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://$addr/metrics" && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    echo "the tracker did not start (admin listener $addr)" >&2
    return 1
}
