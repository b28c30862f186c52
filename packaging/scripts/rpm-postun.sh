#!/bin/sh
# %postun of the baton .rpm. The user baton is left alone.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
