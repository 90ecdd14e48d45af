# Boots the bench VM (software emulation: KVM on these machines is a PVM flavour that hangs
# stock guest kernels). One vCPU: with two, gpiolib-cdev's irq thread can run late on the
# other vCPU. Sourced by vm/run-bench; expects log() and die().

# no_timer_check: the kernel's check that the emulated IO-APIC timer ticks fails now and then
# on a loaded host ("IO-APIC + timer doesn't work!", a panic at boot); virtual machines skip it.
#
# The guest's TSC under TCG is the host's TSC (and, with -icount, a 1 GHz virtual counter).
# Telling the guest its frequency keeps it on the `tsc` clocksource: without it, calibration
# against the emulated PIT can fail on a loaded host and the guest falls back to a 1 ms
# `refined-jiffies` clock, which quantises every GPIO timestamp.
host_tsc_khz() {
    if [ -n "${DOORFLOW_VM_TSC_KHZ:-}" ]; then
        echo "$DOORFLOW_VM_TSC_KHZ"
        return
    fi
    awk -F: '/^cpu MHz/ { printf "%d\n", $2 * 1000; exit }' /proc/cpuinfo
}

# qemu_command ARCH KERNEL INITRD SHARE: prints the command (NUL-separated) for one boot.
# VM_ICOUNT=1 makes guest time deterministic (exact pulse timing, slower boot); VM_DISK adds
# a virtio disk (cache=none, so a write the guest flushed has reached the host file);
# VM_SERIAL2 captures the guest's second serial port (x86_64: ttyS1) into a host file.
qemu_command() {
    local arch=$1 kernel=$2 initrd=$3 share=$4 cmd accel append
    if [ "${VM_ICOUNT:-0}" = 1 ]; then
        accel=(-accel tcg,thread=single -icount shift=0,sleep=off)
    else
        accel=(-accel tcg,thread=multi)
    fi
    case $arch in
    x86_64)
        local khz
        khz=$(host_tsc_khz)
        [ "${VM_ICOUNT:-0}" = 1 ] && khz=1000000
        cmd=(qemu-system-x86_64 -M pc "${accel[@]}" -cpu max)
        [ -f /usr/share/qemu/qboot.rom ] && cmd+=(-bios /usr/share/qemu/qboot.rom)
        append="console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=$khz tsc=reliable no_timer_check"
        ;;
    aarch64)
        cmd=(qemu-system-aarch64 -M virt -cpu cortex-a72 "${accel[@]}")
        append="console=ttyAMA0 quiet panic=-1"
        ;;
    esac
    cmd+=(-smp 1 -m 512 -nographic -no-reboot -nodefaults -serial "${VM_CONSOLE:-stdio}"
        -kernel "$kernel" -initrd "$initrd" -append "$append ${VM_APPEND:-}"
        -virtfs "local,path=$share,mount_tag=host,security_model=none"
        -device virtio-rng-pci)
    if [ -n "${VM_DISK:-}" ]; then
        cmd+=(-drive "file=$VM_DISK,if=none,format=raw,cache=none,id=disk0" -device virtio-blk-pci,drive=disk0)
    fi
    if [ -n "${VM_SERIAL2:-}" ]; then
        cmd+=(-serial "file:$VM_SERIAL2")
    fi
    printf '%s\0' "${cmd[@]}"
}
