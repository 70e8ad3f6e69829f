#!/bin/sh
# OpenSSH's server for the remote-benchmark tests (tests/test_remote_bench.py starts its own sshd on the
# loopback, as the current user, with keys it generates). Installs the Debian/Ubuntu package when
# /usr/sbin/sshd is missing; elsewhere it says what to install and the tests that need sshd are skipped.
set -e
SSHD=/usr/sbin/sshd
[ -x "$SSHD" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_sshd: $SSHD is missing and there is no apt-get: install OpenSSH's server (the ssh tests skip)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_sshd: $SSHD is missing: run 'apt-get install -y openssh-server' as root (the ssh tests skip)" >&2
        exit 0
    fi
fi
# no service start: the package's postinst may try to start the system daemon; the tests run their own
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
[ -x "$SSHD" ] || { echo "ensure_sshd: openssh-server installed but $SSHD is missing" >&2; exit 1; }
