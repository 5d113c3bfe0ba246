#!/usr/bin/env bash
# Builds the tekflux image without a container engine or a base image, and checks that it runs.
#
#   infra/container/scratch-image.sh [BINARY]      # default: target/release/tekflux
#
# The published Containerfile starts from distroless/cc (glibc, libgcc, CA certificates, the
# nonroot user, no shell). No base image can be pulled where CI runs, so this builds the same
# layout FROM scratch with buildah (`--storage-driver vfs`, `--isolation chroot`: no daemon, no
# privileges beyond root): the stripped binary, the shared libraries it links (read from the
# binary with ldd), the CA bundle, /etc/passwd with user 65532 and a sticky /tmp. It then runs
# `tekflux --version` and `tekflux serve` inside it as user 65532, and `serve` must answer
# /healthz. The last line printed is the image size in bytes (its root filesystem, which is
# what a pull unpacks), for BENCHMARKS.md.
set -euo pipefail

binary=${1:-target/release/tekflux}
image=${TEKFLUX_IMAGE:-localhost/tekflux:scratch}
port=${TEKFLUX_IMAGE_PORT:-18080}
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

if ! command -v buildah >/dev/null 2>&1; then
  echo "buildah is not installed: apt-get install buildah" >&2
  exit 1
fi
if [ ! -x "$binary" ]; then
  echo "no binary at $binary: cargo build --release --locked -p tekflux" >&2
  exit 1
fi

staging=$(mktemp -d)
container=""
cleanup() {
  [ -n "$container" ] && buildah rm "$container" >/dev/null 2>&1 || true
  rm -rf "$staging"
}
trap cleanup EXIT

strip -o "$staging/tekflux" "$binary"

container=$(buildah from scratch)
rootfs=$(buildah mount "$container")
install -D -m 0755 "$staging/tekflux" "$rootfs/usr/local/bin/tekflux"
# The shared libraries and the dynamic loader, at the paths the binary asks for.
while read -r library; do
  install -D -m 0755 "$(readlink -f "$library")" "$rootfs$library"
done < <(ldd "$binary" | grep -o '/[^ ]*' | sort -u)
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$rootfs/etc" "$rootfs/home/nonroot" "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
chown 65532:65532 "$rootfs/home/nonroot"
chmod 1777 "$rootfs/tmp"
size=$(du -sb "$rootfs" | cut -f1)
buildah umount "$container" >/dev/null

# The same settings as the Containerfile's runtime stage.
buildah config \
  --user 65532:65532 \
  --env MALLOC_MMAP_THRESHOLD_=131072 \
  --port 8080 \
  --entrypoint '["/usr/local/bin/tekflux"]' \
  --cmd serve \
  "$container"
buildah commit --quiet "$container" "$image" >/dev/null

run() { buildah run --user 65532:65532 --env NO_COLOR=1 "$container" -- "$@"; }

echo "tekflux --version in the image: $(run /usr/local/bin/tekflux --version)"
log="$staging/serve.log"
# In a session of its own, so that stopping it stops buildah and the server it started.
setsid buildah run --user 65532:65532 --env NO_COLOR=1 "$container" -- \
  /usr/local/bin/tekflux serve --listen "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
healthy=""
for _ in $(seq 1 100); do
  # Python, not curl: it is on every machine CI runs on.
  if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
    healthy=yes
    break
  fi
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
kill -TERM -- "-$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
if [ -z "$healthy" ]; then
  echo "tekflux serve in the image did not answer /healthz:" >&2
  cat "$log" >&2
  exit 1
fi
echo "tekflux serve in the image, as user 65532, answered /healthz"
echo "image $image: $size bytes ($(numfmt --to=iec "$size"))"
echo "$size"
