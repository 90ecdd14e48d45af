# Builds the bench kernel for one architecture from Debian's linux-source-6.1: tinyconfig, the
# fragments in vm/kernel/ merged on top, every fragment option checked, then the image. The
# image is cached under $VM_CACHE/kernel/<arch>-<key>/, keyed by a hash of the fragments, this
# script and the source package version, so reruns (and CI) rebuild only when one changes.
# Sourced by vm/run-bench; expects VM_DIR, VM_CACHE and log().

kernel_source_version() {
    dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null ||
        die "linux-source-6.1 is not installed (apt-get install linux-source-6.1)"
}

# kernel_image ARCH: prints the cached image path, building it first when needed.
kernel_image() {
    local arch=$1 kernel_arch image_name cross=
    case $arch in
    x86_64) kernel_arch=x86_64 image_name=arch/x86/boot/bzImage ;;
    aarch64) kernel_arch=arm64 image_name=arch/arm64/boot/Image cross=aarch64-linux-gnu- ;;
    *) die "unknown architecture $arch (x86_64 or aarch64)" ;;
    esac
    local fragments=("$VM_DIR/kernel/common.config" "$VM_DIR/kernel/$arch.config")
    local version key
    version=$(kernel_source_version)
    key=$( (cat "${fragments[@]}" "$VM_DIR/lib/kernel.sh"; echo "$version") | sha256sum | cut -c1-16)
    local out="$VM_CACHE/kernel/$arch-$key"
    if [ -f "$out/image" ]; then
        echo "$out/image"
        return
    fi
    mkdir -p "$VM_CACHE"
    (
        flock 9
        [ -f "$out/image" ] && exit 0
        local src="$VM_CACHE/src/$version"
        if [ ! -f "$src/linux-source-6.1/Makefile" ]; then
            log "extracting linux-source-6.1 $version"
            rm -rf "$src" && mkdir -p "$src"
            tar -xf /usr/src/linux-source-6.1.tar.xz -C "$src"
        fi
        local build="$VM_CACHE/build/$arch"
        local make=(make -s -C "$src/linux-source-6.1" O="$build" ARCH="$kernel_arch")
        [ -n "$cross" ] && make+=(CROSS_COMPILE="$cross")
        mkdir -p "$build"
        log "configuring the $arch kernel (tinyconfig + ${fragments[*]##*/})"
        "${make[@]}" tinyconfig >/dev/null
        (cd "$build" && ARCH=$kernel_arch "$src/linux-source-6.1/scripts/kconfig/merge_config.sh" \
            -m -O "$build" "$build/.config" "${fragments[@]}" >/dev/null)
        "${make[@]}" olddefconfig >/dev/null
        local missing=()
        while IFS= read -r option; do
            grep -qx "$option" "$build/.config" || missing+=("$option")
        done < <(grep -h '^CONFIG_' "${fragments[@]}")
        if [ ${#missing[@]} -gt 0 ]; then
            die "kernel options that did not survive olddefconfig (a dependency is missing): ${missing[*]}"
        fi
        log "building the $arch kernel (make -j$(nproc); about 3 minutes on 2 cores)"
        "${make[@]}" -j"$(nproc)" "$(basename "$image_name")" >"$build/build.log" 2>&1 ||
            { tail -30 "$build/build.log" >&2; die "kernel build failed (log: $build/build.log)"; }
        mkdir -p "$out.tmp"
        cp "$build/$image_name" "$out.tmp/image"
        cp "$build/.config" "$out.tmp/config"
        rm -rf "$out" && mv "$out.tmp" "$out"
    ) 9>"$VM_CACHE/.kernel-$arch.lock" || exit 1
    echo "$out/image"
}
