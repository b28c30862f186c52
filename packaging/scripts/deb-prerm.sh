#!/bin/sh
# prerm of the baton .deb: stop every instance when the package goes away
# (not on upgrade, which leaves them running on the old binary until they
# are restarted).
set -e

if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop 'baton@*.service' 'baton@*.socket' >/dev/null 2>&1 || true
fi
exit 0
