# Guest-side helpers of the VM bench (busybox sh): gpio-sim chips, the DoorFlow simulator, the
# agent with a per-scenario config, its event stream, and checks that read the relay line
# itself (the sim's `value`), never the agent's belief.

# The binaries run from RAM (main.sh copies them from the share): see run-bench, share_binary.
BIN=/tmp/bin
AGENT=$BIN/doorflow-agent
SIMULATOR=$BIN/doorflow-sim
OUT=/mnt/host/out
W=/tmp/bench
SIM_PORT=18080
CONFIGFS=/sys/kernel/config/gpio-sim

# alive PID: the process exists and is not a zombie (a zombie has released its files).
alive() { [ -e "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# ---- the DoorFlow simulator ------------------------------------------------------------
# The one place the bench starts the simulator (`doorflow-sim`, its own binary: the packaged
# agent has none). Person n has card value n; every fifth person also the
# PIN 500000+n; every 50th is disabled; all are in group 100. The rate limit is raised so a
# first sync takes a fraction of a second instead of 120/min pacing.
start_simulator() { # PORT [doorflow-sim options...]
    local port=$1
    shift
    "$SIMULATOR" --port "$port" --people 200 --limit 100000 "$@" >"/tmp/sim-$port.log" 2>&1 &
    echo $! >"/tmp/sim-$port.pid"
    local i=0
    while ! grep -q "DoorFlow simulator on" "/tmp/sim-$port.log" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 300 ] && { cat "/tmp/sim-$port.log"; return 1; }
        usleep 100000
    done
}

stop_simulator() { # PORT
    [ -f "/tmp/sim-$1.pid" ] && kill "$(cat "/tmp/sim-$1.pid")" 2>/dev/null
    rm -f "/tmp/sim-$1.pid"
}

# ---- gpio-sim ---------------------------------------------------------------------------
# gpiosim_up NAME LINES: a live simulated chip; sets CHIP (gpiochipN) and LINES (its sysfs
# directory, with sim_gpioK/pull to drive an input and sim_gpioK/value to read an output).
gpiosim_up() {
    local dir=$CONFIGFS/$1
    mkdir "$dir" "$dir/bank0" || return 1
    echo "$2" >"$dir/bank0/num_lines"
    echo 1 >"$dir/live" || return 1
    CHIP=$(cat "$dir/bank0/chip_name")
    LINES=/sys/devices/platform/$(cat "$dir/dev_name")/$CHIP
}

gpiosim_down() { # NAME
    local dir=$CONFIGFS/$1
    [ -d "$dir" ] || return 0
    echo 0 >"$dir/live"
    rmdir "$dir/bank0" "$dir"
}

line() { echo "$LINES/sim_gpio$1"; }
pull() { echo "pull-$2" >"$(line "$1")/pull"; } # LINE up|down
value() { cat "$(line "$1")/value"; }

# ---- the agent ---------------------------------------------------------------------------
# Door layout on the chip: reader D0/D1 on 0/1, relay on 2, contact on 3, REX on 4 (contact
# and REX active low, as dry contacts to ground with pull-ups usually are).
D0=0 D1=1 RELAY=2 CONTACT=3 REX=4

# write_config: the agent's config for the current scenario, from these variables.
FAIL_MODE=secure RELAY_ACTIVE_LOW=false UNLOCK_S=1 HELD_OPEN_S=2 READER_D1=$D1 API_PORT=$SIM_PORT
# READER_EXTRA: more TOML for [doors.reader] (its own keys first, then any subtables).
READER_EXTRA=
EVENTS_URL= STORE=$W/db CHIP_PATH=
write_config() {
    mkdir -p "$W"
    (umask 077 && echo sim-api-key >"$W/api_key")
    cat >"$W/config.toml" <<CONFIG
[api]
base_url = "http://127.0.0.1:$API_PORT"
requests_per_minute = 10000

[api.auth]
method = "api_key"
api_key = "$W/api_key"

[store]
path = "$STORE"

[uplink]
${EVENTS_URL:+events_url = \"$EVENTS_URL\"}
retry_base_ms = 200
retry_cap_s = 2
queue_max_records = 1000000

[gpio]
backend = "gpiod"
chip = "${CHIP_PATH:-$CHIP}"

[admin]
socket = "$W/admin.sock"

[[doors]]
name = "front"
channel_id = 1340
unlock_s = $UNLOCK_S
held_open_s = $HELD_OPEN_S
fail_mode = "$FAIL_MODE"
facility_codes = [1]
allowed_roles = [1]
allowed_groups = [100]

[doors.reader]
d0 = $D0
d1 = $READER_D1
$READER_EXTRA

[doors.relay]
line = $RELAY
active_low = $RELAY_ACTIVE_LOW

[doors.contact]
line = $CONTACT
active_low = true

[doors.rex]
line = $REX
active_low = true
CONFIG
}

# Relay levels on the line for the configured polarity.
released_level() { [ "$RELAY_ACTIVE_LOW" = true ] && echo 0 || echo 1; }
locked_level() { [ "$RELAY_ACTIVE_LOW" = true ] && echo 1 || echo 0; }

# Idle inputs: reader lines high, door closed, exit button released (pull-ups); the relay
# line's own pull (what the board holds it at when nobody drives it) at the locked level.
idle_lines() {
    pull $D0 up
    pull $D1 up
    pull $CONTACT up
    pull $REX up
    [ "$(locked_level)" = 1 ] && pull $RELAY up || pull $RELAY down
}

agent() { "$AGENT" --config "$W/config.toml" "$@"; }

# start_agent: runs the agent (log in $W/agent.log), waits until status answers with a
# snapshot, and starts the event watcher ($W/events.log).
start_agent() {
    # A socket left by a killed agent would let `status` below open the store itself.
    rm -f "$W/admin.sock"
    # Not through agent(): a backgrounded function is a subshell, and $! must be the agent.
    "$AGENT" --config "$W/config.toml" run >>"$W/agent.log" 2>&1 &
    AGENT_PID=$!
    local i=0
    # `status` opens the store itself while no agent answers on the socket: wait for the
    # socket first, or the two would race for the store's lock.
    while [ ! -S "$W/admin.sock" ] || ! agent status --json >"$W/status.json" 2>/dev/null ||
        ! grep -q '"agent_running":true' "$W/status.json" || grep -q '"people":0' "$W/status.json"; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 "$AGENT_PID" 2>/dev/null; then
            echo "agent did not become ready"
            tail -20 "$W/agent.log"
            return 1
        fi
        usleep 100000
    done
    watch_events
}

# watch_events [OUT]: the agent's `watch_events` stream, appended to $W/events.log or copied to
# OUT (a tty is drained line by line: the power-cut test's acknowledgement channel).
watch_events() {
    rm -f "$W/watch.err"
    if [ -n "${1:-}" ]; then
        doorbench watch-events "$W/admin.sock" "$1" 2>"$W/watch.err" &
    else
        doorbench watch-events "$W/admin.sock" >>"$W/events.log" 2>"$W/watch.err" &
    fi
    WATCH_PID=$!
    wait_until 5000 grep -q watching "$W/watch.err" || { echo "event watcher did not connect"; return 1; }
}

stop_agent() { # [SIGNAL]
    [ -n "${AGENT_PID:-}" ] || return 0
    kill "-${1:-TERM}" "$AGENT_PID" 2>/dev/null
    wait "$AGENT_PID" 2>/dev/null
    AGENT_EXIT=$?
    AGENT_PID=
    [ -n "${WATCH_PID:-}" ] && kill "$WATCH_PID" 2>/dev/null
    WATCH_PID=
    return 0
}

status_field() { # KEY: the first "KEY":value in a fresh `status --json`
    agent status --json | grep -o "\"$1\":[^,}]*" | head -1 | cut -d: -f2- | tr -d '"'
}

# ---- observations ----------------------------------------------------------------------
# wait_until TIMEOUT_MS COMMAND...: runs COMMAND every 50 ms until it succeeds (0) or the
# time is up (1).
wait_until() {
    local deadline=$(($(now_ms) + $1))
    shift
    until "$@" 2>/dev/null; do
        [ "$(now_ms)" -gt $deadline ] && return 1
        usleep 50000
    done
}

# wait_event CODE [TIMEOUT_MS]: until the event stream has an event with that DoorFlow code.
wait_event() { wait_until "${2:-3000}" grep -q "\"event_code\":$1," "$W/events.log"; }

event_count() { grep -c "\"event_code\":$1," "$W/events.log" 2>/dev/null || true; }

line_is() { [ "$(value "$1")" = "$2" ]; }

# wait_value LINE VALUE [TIMEOUT_MS]
wait_value() { wait_until "${3:-3000}" line_is "$1" "$2"; }

# inputs_are PATTERN: the door's `inputs` (its GPIO input lines) in `status` matches (case
# pattern).
inputs_are() {
    INPUTS=$(status_field inputs)
    case $INPUTS in $1) return 0 ;; esac
    return 1
}

# send_frames WATCH_MS TOKEN...: plays the tokens on D0/D1 and samples the relay line (or
# SAMPLE_LINE) for WATCH_MS after the last edge; the changes are in $W/send.txt.
send_frames() {
    local watch=$1
    shift
    doorbench send --relay "$(line "${SAMPLE_LINE:-$RELAY}")" --watch-ms "$watch" "$(line $D0)" "$(line $D1)" "$@" >"$W/send.txt"
}

# The relay changes seen by the last send_frames: "T_US VALUE" lines.
relay_changes() { sed -n 's/^change t_us=\([-0-9]*\) value=\([01]\)$/\1 \2/p' "$W/send.txt"; }

# ---- results ---------------------------------------------------------------------------
note() { echo "  $*" | tee -a "$W/notes"; }
fail() {
    note "FAIL: $*"
    return 1
}
