#!/bin/sh
# %post of the baton .rpm ($1: 1 on install, 2 on upgrade).

# The system user of the unprivileged drop-in example
# (/usr/share/doc/baton/examples/baton@.service.d/); the default unit runs
# baton as root and does not use it.
if ! getent passwd baton >/dev/null; then
	useradd --system --user-group --no-create-home --home-dir / \
		--shell /sbin/nologin --comment "baton supervisor" baton || :
fi
# Make systemd see the new or changed unit template. Running instances are
# not restarted: restarting baton restarts the service it supervises.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
