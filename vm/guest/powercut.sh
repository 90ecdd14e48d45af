# One boot of the power-cut test (vm/lib/powercut.sh drives the cycles from the host).
#
# 1. Check what the previous cut left: mount /dev/vda (ext4 replays its journal), unmount,
#    `e2fsck -fn` must exit 0; the store must open (`queue list --json` with the agent stopped opens
#    it directly) and its queued events go to the share for the host to compare with the
#    acknowledgements it captured.
# 2. Unless this is the final check, put load on the store until the host kills QEMU: the
#    agent with its store on the disk and an event sink that is down (so every event stays
#    queued and every acknowledged event must be findable), cards presented continuously,
#    and every acknowledgement (the admin socket's `watch_events` stream, which reports an
#    event once the store says it is durable) copied to the second serial port, which the
#    host captures: a line the host has is an acknowledgement that happened before the cut.

powercut_boot() {
    local cycle=$BENCH_CYCLE check=$OUT/check-$BENCH_CYCLE.txt
    ln -sf /proc/mounts /etc/mtab
    if ! mount -t ext4 /dev/vda /mnt/disk; then
        echo "mount_exit=1" >"$check"
        return 1
    fi
    umount /mnt/disk
    local rc=0
    /sbin/e2fsck -fn /dev/vda >"$OUT/fsck-$cycle.txt" 2>&1 || rc=$?
    echo "fsck_exit=$rc" >"$check"
    mount -t ext4 /dev/vda /mnt/disk || { echo "mount_exit=1" >>"$check"; return 1; }
    STORE=/mnt/disk/db
    EVENTS_URL=http://127.0.0.1:9/events # nobody listens: the backlog grows
    gpiosim_up bench 16 || return 1
    idle_lines
    write_config
    rc=0
    if [ -d "$STORE" ]; then
        agent queue list --json --limit 100000000 >"$OUT/queued-$cycle.txt" 2>"$OUT/queue-$cycle.err" || rc=$?
    else
        : >"$OUT/queued-$cycle.txt"
    fi
    echo "queue_exit=$rc" >>"$check"
    sync
    if [ "${BENCH_FINAL:-0}" = 1 ]; then
        umount /mnt/disk
        return 0
    fi

    start_simulator $SIM_PORT || return 1
    start_agent || return 1
    watch_events /dev/ttyS1 || return 1
    echo "BENCH: LOAD RUNNING"
    # Swipes until the power goes: granted and denied cards, now and then the exit button.
    local n=0
    while :; do
        n=$((n + 1))
        doorbench send "$(line $D0)" "$(line $D1)" "$(doorbench card h10301 1 $((n % 250 + 1)))" gap:35 \
            "$(doorbench card h10301 1 $((n % 97 + 300)))" >/dev/null
        if [ $((n % 5)) = 0 ]; then
            pull $REX down
            usleep 30000
            pull $REX up
        fi
    done
}
