#!/bin/sh
# postrm of the baton .deb. /etc/baton and the user baton are left alone
# (dpkg --purge removes only the package's own files; a user may own files
# elsewhere).
set -e

case "$1" in
remove|purge)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null || true
	fi
	;;
esac
exit 0
