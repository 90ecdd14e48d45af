# Runs in the guest (from /init): loads /mnt/host/run.conf and dispatches on BENCH_MODE.
. /mnt/host/run.conf
. /mnt/host/guest/lib.sh
# Into RAM before anything is timed: nothing is paged in over 9p during a scenario.
mkdir -p "$BIN" && cp /mnt/host/bin/* "$BIN/" || { echo "cannot copy the binaries into RAM"; exit 2; }
case $BENCH_MODE in
doors)
    . /mnt/host/guest/doors.sh
    run_scenarios $BENCH_SCENARIOS
    ;;
latency)
    . /mnt/host/guest/doors.sh
    run_latency "$BENCH_CARDS"
    ;;
powercut)
    . /mnt/host/guest/powercut.sh
    powercut_boot
    ;;
*)
    echo "unknown BENCH_MODE $BENCH_MODE"
    exit 2
    ;;
esac
