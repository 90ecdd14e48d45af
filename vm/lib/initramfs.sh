# Builds the guest's initramfs for one architecture: static busybox, the glibc runtime the
# host-built (or cross-built) agent links against, the doorbench helper, and vm/guest/init as
# PID 1. The agent binary and the scenario scripts come over the 9p share instead, so editing
# them needs no rebuild. x86_64 also gets e2fsck (with its libraries) for the power-cut checks.
# Sourced by vm/run-bench; expects VM_DIR, VM_CACHE, log() and die().

# The arm64 busybox comes from Debian's busybox-static:arm64 package, fetched once with apt
# (which needs the arm64 architecture enabled: dpkg --add-architecture arm64; apt-get update).
arm64_busybox() {
    local cached="$VM_CACHE/busybox-arm64/busybox"
    if [ ! -x "$cached" ]; then
        log "fetching busybox-static:arm64 with apt-get download"
        if ! dpkg --print-foreign-architectures | grep -qx arm64; then
            dpkg --add-architecture arm64
            apt-get update -q >/dev/null
        fi
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && apt-get download -q busybox-static:arm64 >/dev/null) ||
            die "apt-get download busybox-static:arm64 failed"
        dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$tmp/root"
        mkdir -p "$(dirname "$cached")"
        cp "$tmp/root/bin/busybox" "$cached"
        rm -rf "$tmp"
    fi
    echo "$cached"
}

# copy_with_libs ROOT BINARY...: the binaries and every shared library ldd names (x86_64 host).
copy_with_libs() {
    local root=$1 file lib
    shift
    for file in "$@"; do
        install -D "$file" "$root$file"
        for lib in $(ldd "$file" | grep -o '/[^ ]*'); do
            [ -e "$root$lib" ] || install -D "$lib" "$root$lib"
        done
    done
}

# build_initramfs ARCH OUT: writes a gzipped cpio to OUT.
build_initramfs() {
    local arch=$1 out=$2 root busybox cc
    root=$(mktemp -d)
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt/host,mnt/disk,etc}
    mknod -m 600 "$root/dev/console" c 5 1
    case $arch in
    x86_64)
        busybox=$(command -v busybox) cc=gcc
        file -L "$busybox" | grep -q 'statically linked' || die "busybox is not static (apt-get install busybox-static)"
        # The glibc runtime a host-built Rust binary needs, and e2fsck for the power-cut checks.
        local runtime
        for runtime in /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/{libc.so.6,libm.so.6,libgcc_s.so.1}; do
            install -D "$(readlink -f "$runtime")" "$root$runtime"
        done
        copy_with_libs "$root" /sbin/e2fsck
        ;;
    aarch64)
        busybox=$(arm64_busybox) cc=aarch64-linux-gnu-gcc
        local sysroot=/usr/aarch64-linux-gnu lib
        [ -d "$sysroot/lib" ] || die "no aarch64 runtime in $sysroot (apt-get install libc6-dev-arm64-cross)"
        for lib in ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1; do
            install -D "$(readlink -f "$sysroot/lib/$lib")" "$root/lib/$lib"
        done
        ln -s lib "$root/lib64"
        ;;
    esac
    # The agent's HTTPS client loads the system CA roots at start (a board has ca-certificates).
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    install -m 0755 "$busybox" "$root/bin/busybox"
    "$cc" -static -O2 -Wall -Wextra -Werror -o "$root/bin/doorbench" "$VM_DIR/guest/doorbench.c" ||
        die "cannot build doorbench with $cc"
    install -m 0755 "$VM_DIR/guest/init" "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
    rm -rf "$root"
}
