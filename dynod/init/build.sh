#!/bin/sh
# Build dyno-init, the static PID 1 of every dyno: build.sh OUTPUT [CC]
# Static so it runs inside any stack root filesystem (it is bind-mounted read-only
# into the dyno); glibc static is fine: no NSS, no dlopen.
set -eu

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
	echo "usage: $0 OUTPUT [CC]" >&2
	exit 2
fi
out=$1
cc=${2:-${CC:-gcc}}
src=$(dirname "$0")/dyno-init.c
max_bytes=1048576

tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT
"$cc" -O2 -static -Wall -Wextra -Werror -o "$tmp" "$src"
strip "$tmp"
size=$(wc -c < "$tmp")
if [ "$size" -ge "$max_bytes" ]; then
	echo "$0: $out is $size bytes, over the 1 MiB budget" >&2
	exit 1
fi
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
