# Power cuts, driven from the host (sourced by vm/run-bench after prepare()).
#
# An ext4 disk image (virtio, cache=none: what the guest flushed has reached the host file,
# what it had not is gone) carries the agent's store across boots. Each cycle boots the VM,
# which first checks what the previous cut left (journal replay, e2fsck -fn, the store opens,
# its queued events) and then presents cards while the event backlog grows; once the load
# runs, QEMU is SIGKILLed at a random moment. The guest copies every acknowledged event id
# to its second serial port, drained (tcdrain) before the next, into a host file: those
# acknowledgements happened before the cut. Every one of them must be in the store at every
# later check; any that is not was acknowledged and then lost.

# event_ids: the ids of the events in JSON lines on stdin (`queue list` entries or
# `watch_events` lines), sorted; only whole lines count (a line cut by the kill is not an
# acknowledgement).
event_ids() {
    grep -a '}$' | grep -o '"event":{[^}]*}' | grep -o '"id":[0-9]*' | cut -d: -f2 | sort -u || true
}

powercut_run() {
    local cycles=10 expect_loss=0 seed=$$ min_ms=300 max_ms=3000
    while [ $# -gt 0 ]; do
        case $1 in
        --cycles) cycles=$2; shift 2 ;;
        --expect-loss) expect_loss=1; shift ;;
        --seed) seed=$2; shift 2 ;;
        --kill-window-ms) min_ms=${2%-*} max_ms=${2#*-}; shift 2 ;;
        *) die "powercut: unknown argument $1" ;;
        esac
    done
    RANDOM=$seed
    local disk=$RUN_DIR/disk.img acked=$RUN_DIR/acked.txt report=$RUN_DIR/report.txt
    truncate -s 256M "$disk"
    mkfs.ext4 -q -F "$disk"
    local lost_all=$RUN_DIR/lost.txt
    : >"$acked"
    : >"$lost_all"
    : >"$report"
    local cycle lossy_cuts=0 lost_total=0 acked_total=0 bad_fs=0 bad_store=0 started=$SECONDS
    log "powercut: $cycles cuts (seed $seed, kill $min_ms-$max_ms ms into the load); $RUN_DIR"
    for cycle in $(seq 1 $((cycles + 1))); do
        local final=0
        [ "$cycle" -gt "$cycles" ] && final=1
        {
            grep -v '^BENCH_\(MODE\|CYCLE\|FINAL\)=' "$SHARE/run.conf"
            echo "BENCH_MODE=powercut"
            echo "BENCH_CYCLE=$cycle"
            echo "BENCH_FINAL=$final"
        } >"$SHARE/run.conf.new"
        mv "$SHARE/run.conf.new" "$SHARE/run.conf"
        local console=$RUN_DIR/console-$cycle.log acks=$RUN_DIR/acks-$cycle.log
        local -a cmd
        mapfile -d '' cmd < <(VM_DISK=$disk VM_SERIAL2=$acks qemu_command "$ARCH" "$KERNEL" "$INITRD" "$SHARE")
        "${cmd[@]}" </dev/null >"$console" 2>&1 &
        local qemu=$! waited=0 cut_after=
        if [ $final = 0 ]; then
            until grep -q "BENCH: LOAD RUNNING" "$console" 2>/dev/null; do
                if ! kill -0 $qemu 2>/dev/null || [ $waited -gt 1800 ]; then
                    kill -KILL $qemu 2>/dev/null
                    tail -20 "$console" >&2
                    die "cycle $cycle: the load did not start (console: $console)"
                fi
                sleep 0.1
                waited=$((waited + 1))
            done
            cut_after=$((min_ms + (RANDOM * 32768 + RANDOM) % (max_ms - min_ms + 1)))
            sleep "$(awk "BEGIN { print $cut_after / 1000 }")"
            kill -KILL $qemu
            wait $qemu 2>/dev/null || true
        else
            timeout --kill-after=10 "$BOOT_TIMEOUT" tail --pid=$qemu -f /dev/null || kill -KILL $qemu
            wait $qemu 2>/dev/null || true
        fi

        # What the boot found: the state the previous cut left.
        local check=$SHARE/out/check-$cycle.txt
        [ -f "$check" ] || die "cycle $cycle: no check result (console: $console)"
        local fsck queue stored missing
        fsck=$(sed -n 's/^fsck_exit=//p' "$check")
        queue=$(sed -n 's/^queue_exit=//p' "$check")
        event_ids <"$SHARE/out/queued-$cycle.txt" >"$RUN_DIR/stored-$cycle.txt"
        stored=$(wc -l <"$RUN_DIR/stored-$cycle.txt")
        # Lost at this cut: acknowledged before it, absent now, and not already lost earlier.
        comm -23 "$acked" "$RUN_DIR/stored-$cycle.txt" | comm -23 - "$lost_all" >"$RUN_DIR/lost-$cycle.txt"
        missing=$(wc -l <"$RUN_DIR/lost-$cycle.txt")
        sort -u "$lost_all" "$RUN_DIR/lost-$cycle.txt" -o "$lost_all"
        if [ "$cycle" -gt 1 ]; then
            local line
            line=$(printf 'cut %3d (%5s ms into the load): acknowledged so far %6d, in the store %6d, lost here %4d, e2fsck exit %s, store open exit %s' \
                $((cycle - 1)) "${previous_cut:-?}" "$(wc -l <"$acked")" "$stored" "$missing" "${fsck:-?}" "${queue:-?}")
            echo "$line" | tee -a "$report"
            [ "$missing" -gt 0 ] && lossy_cuts=$((lossy_cuts + 1)) && lost_total=$((lost_total + missing))
            [ "$fsck" = 0 ] || bad_fs=$((bad_fs + 1))
            [ "$queue" = 0 ] || bad_store=$((bad_store + 1))
        fi
        previous_cut=$cut_after
        # The acknowledgements this boot's load made (partial last line: not acknowledged).
        if [ -f "$acks" ]; then
            event_ids <"$acks" | sort -u - "$acked" >"$acked.new"
            mv "$acked.new" "$acked"
        fi
    done
    acked_total=$(wc -l <"$acked")
    local summary
    summary="powercut: $cycles cuts in $((SECONDS - started)) s, $acked_total events acknowledged; $lossy_cuts cuts lost acknowledged events ($lost_total lost in all, ids in lost.txt); e2fsck failed after $bad_fs; the store failed to open after $bad_store"
    echo "$summary" | tee -a "$report"
    if [ $expect_loss = 1 ]; then
        if [ $lossy_cuts -gt 0 ]; then
            echo "negative control: the bench caught the loss (as it must)"
            return 0
        fi
        echo "negative control FAILED: no loss found, the bench would not catch a missing sync"
        return 1
    fi
    [ $lossy_cuts = 0 ] && [ $bad_fs = 0 ] && [ $bad_store = 0 ]
}
