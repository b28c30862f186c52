#!/bin/sh
# %preun of the baton .rpm ($1: 0 on erase, 1 on upgrade): stop every
# instance when the package goes away, not on upgrade.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl stop 'baton@*.service' 'baton@*.socket' >/dev/null 2>&1 || :
fi
exit 0
